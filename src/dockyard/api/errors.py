"""Render every error as RFC 9457 application/problem+json."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from dockyard.errors import DockyardError

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; `detail` says what to change",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "422 only: each invalid field and why",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}
_STATUSES = {
    400: "malformed request (e.g. a Content-Length that is not a number)",
    401: "no token, or an unknown one",
    403: "the caller's role does not allow this",
    404: "no such object (also: another project's)",
    409: "the current state does not allow this; the detail says why",
    413: "the body is larger than the server's limit",
    422: "invalid input; `errors` names each field",
    503: "the database is busy; try again",
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {PROBLEM: {"schema": _PROBLEM_SCHEMA}}}
    for status, text in _STATUSES.items()
}


def problem(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    """``a.b.0``: the field's path; an unknown key is echoed only short and escaped."""
    parts = [_printable(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _loc(error: Any) -> tuple[Any, ...]:
    """The error's location, plus the path inside the field that the bounds check found."""
    at = (error.get("ctx") or {}).get("at")
    return (*error["loc"], *str(at).split(".")) if at else tuple(error["loc"])


def _printable(part: Any) -> str:
    return str(part).encode("utf-8", "backslashreplace").decode()[:64]


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed(app: FastAPI, request: Request) -> list[str]:
    """Every method some route takes at this path (Starlette's Allow names only the first)."""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in app.router.routes
        )
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(DockyardError)
    async def _dockyard(_: Request, exc: DockyardError) -> JSONResponse:
        body = exc.problem()
        return JSONResponse(body, status_code=exc.status, media_type=PROBLEM)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(_loc(e)), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Validation failed", f"fix these fields: {detail}", errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        detail = str(exc.detail)
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        if exc.status_code == 404:
            detail = "no such endpoint; see /docs or /openapi.json for the API"
        elif exc.status_code == 405:
            headers["allow"] = ", ".join(_allowed(app, request))
            detail = f"use {headers['allow']} here; see /openapi.json"
        return problem(exc.status_code, detail.split(";")[0], detail, headers=headers)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(
            500, "Internal error", f"the server failed: {type(exc).__name__}; see its log"
        )
