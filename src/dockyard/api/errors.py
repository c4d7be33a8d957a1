"""Render every error as RFC 9457 application/problem+json."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from dockyard.errors import DockyardError

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def problem(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    """``a.b.0``: the field's path; an unknown key is echoed only short and escaped."""
    parts = [_printable(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _printable(part: Any) -> str:
    return str(part).encode("utf-8", "backslashreplace").decode()[:64]


def install(app: FastAPI) -> None:
    @app.exception_handler(DockyardError)
    async def _dockyard(_: Request, exc: DockyardError) -> JSONResponse:
        body = exc.problem()
        return JSONResponse(body, status_code=exc.status, media_type=PROBLEM)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Validation failed", f"fix these fields: {detail}", errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 404:
            detail = "no such endpoint; see /docs or /openapi.json for the API"
        elif exc.status_code == 405:
            detail = "this method is not allowed here; see /openapi.json"
        # keep Starlette's headers: a 405 carries Allow, a 401 WWW-Authenticate
        return problem(exc.status_code, detail.split(";")[0], detail, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return problem(
            500, "Internal error", f"the server failed: {type(exc).__name__}; see its log"
        )
