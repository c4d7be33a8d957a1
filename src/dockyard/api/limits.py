"""Body size limits, applied before authentication and before any parsing.

``BodyLimit`` is a plain ASGI middleware around the whole app:

    request -> Content-Length > limit?  -> 413 (nothing read)
            -> upload path?             -> pass the stream through; the handler counts
                                           while writing to disk (TooLarge -> 413)
            -> read the body, counting  -> > limit: 413 (at most limit bytes held)
            -> app (auth, validation, handler) sees the buffered body

JSON bodies are small and FastAPI buffers them anyway, so buffering here costs
nothing more and lets the 413 come before the app sees the request.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dockyard.errors import DockyardError

PROBLEM = "application/problem+json"
# streamed to their handlers, which count (an image upload; a recovery's tar)
UPLOAD_PATH = re.compile(r"^/v1/(images/[^/]+/file|agent/recoveries/[^/]+/data)$")


class TooLarge(DockyardError):
    status = 413
    title = "Content too large"

    def __init__(self, limit: int, what: str, flag: str) -> None:
        super().__init__(
            f"{what} may be at most {_size(limit)}; the server's {flag} sets this limit",
            limit_bytes=limit,
        )


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body: int, max_upload: int) -> None:
        self.app, self.max_body, self.max_upload = app, max_body, max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "PUT" and bool(UPLOAD_PATH.match(scope["path"]))
        limit, what, flag = (
            (self.max_upload, "an image upload", "--max-upload-gb")
            if upload
            else (self.max_body, "a request body", "--max-body-mb")
        )
        declared = _content_length(scope)
        if declared is None:
            await _problem(
                scope, receive, send, 400, "Bad request", "Content-Length is not a number"
            )
            return
        if declared > limit:
            await _refuse(scope, receive, send, TooLarge(limit, what, flag))
            return
        if upload:
            await self.app(scope, receive, send)
            return
        body = await _read(receive, limit)
        if body is None:
            await _refuse(scope, receive, send, TooLarge(limit, what, flag))
            return
        await self.app(scope, _replay(body, receive), send)


def _content_length(scope: Scope) -> int | None:
    """The declared length, 0 when absent (chunked), None when malformed."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 20 else None
    return 0


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # disconnected: the app will notice
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: TooLarge) -> None:
    body = exc.problem()
    # the client may still be sending: tell it to close rather than read the rest
    response = JSONResponse(
        body, status_code=413, media_type=PROBLEM, headers={"connection": "close"}
    )
    await response(scope, receive, send)


async def _problem(
    scope: Scope, receive: Receive, send: Send, status: int, title: str, detail: str
) -> None:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    await JSONResponse(body, status_code=status, media_type=PROBLEM)(scope, receive, send)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"
