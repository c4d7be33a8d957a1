"""The error tree shared by the server, the agent and the CLI.

    DockyardError (500)            anything we raise on purpose
    ├── BadRequest (400)
    ├── Unauthorized (401)         no or unknown token
    ├── Forbidden (403)            role does not allow the action
    ├── NotFound (404)             also for resources of another project
    ├── Conflict (409)             state does not allow it, name or IP taken
    │   └── NoValidHost (409)      the scheduler found no host; says why
    ├── Gone (410)                 it existed and was deleted (ends a watch)
    └── Unprocessable (422)        input is well-formed but invalid

Every error carries a ``detail`` that tells the user what to change. The API
renders them as RFC 9457 problem+json; the CLI prints the detail and exits 1.
Agent-side failures are classified by ``retryable``: a retry-later error
(dockerd restarting) versus a give-up error (image missing).
"""

from __future__ import annotations

from typing import Any


class DockyardError(Exception):
    status = 500
    title = "Internal error"
    retryable = False

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type_slug(self) -> str:
        return self.title.lower().replace(" ", "-")

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://dockyard.dev/problems/{self.type_slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        return body


class BadRequest(DockyardError):
    status = 400
    title = "Bad request"


class Unauthorized(DockyardError):
    status = 401
    title = "Unauthorized"


class Forbidden(DockyardError):
    status = 403
    title = "Forbidden"


class NotFound(DockyardError):
    status = 404
    title = "Not found"


class Conflict(DockyardError):
    status = 409
    title = "Conflict"


class NoValidHost(Conflict):
    title = "No valid host"


class Gone(DockyardError):
    status = 410
    title = "Gone"


class Unprocessable(DockyardError):
    status = 422
    title = "Unprocessable"


class TemporaryError(DockyardError):
    """Agent side: try again later (dockerd down, server unreachable)."""

    retryable = True
    title = "Temporary failure"


class PermanentError(DockyardError):
    """Agent side: retrying will not help; report it to the user."""

    title = "Permanent failure"
