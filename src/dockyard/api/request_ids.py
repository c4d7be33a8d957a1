"""Every request gets an id: the client's ``X-Request-Id`` (its first 64 characters)
or a new ``req-<uuid>``; handlers read it as ``request.state.request_id`` (the action
log keeps it), and the answer carries it back in ``X-Request-Id``.

A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware`` (``@app.middleware``):
that one runs the rest of the app in a task of its own and passes the response
through memory streams, a cost on every request for setting one header."""

from __future__ import annotations

import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = (Headers(scope=scope).get("x-request-id") or f"req-{uuid.uuid4()}")[:64]
        scope.setdefault("state", {})["request_id"] = rid

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = rid
            await send(message)

        await self.app(scope, receive, answer)
