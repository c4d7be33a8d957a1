"""Request-scoped dependencies: the database session, the caller, the request id."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request

from dockyard.api.watch import HostWatch
from dockyard.db.identity import Principal, authenticate
from dockyard.db.session import Database, Session
from dockyard.errors import Forbidden, Unauthorized


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def watch(request: Request) -> HostWatch:
    w: HostWatch = request.app.state.watch
    return w


def session(request: Request, db: Annotated[Database, Depends(database)]) -> Iterator[Session]:
    with db.session(write=request.method not in ("GET", "HEAD")) as s:
        yield s


class TokenCache:
    """Known tokens for a few seconds, so polling clients cost no extra query.

    A token deleted from the database keeps working here for at most ``ttl``.
    """

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        with self._lock:
            hit = self._entries.get(token)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def put(self, token: str, who: Principal) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[token] = (who, time.monotonic() + self.ttl)


def principal(request: Request, db: Annotated[Database, Depends(database)]) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send 'Authorization: Bearer <token>'; set DOCKYARD_TOKEN for the CLI")
    cache: TokenCache = request.app.state.tokens
    who = cache.get(token)
    if who is None:
        with db.session(write=False) as s:
            who = authenticate(s, token)
        cache.put(token, who)
    return who


def user(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.role == "agent":
        raise Forbidden("agent tokens may only call /v1/agent endpoints; use a user token")
    return who


def admin(who: Annotated[Principal, Depends(user)]) -> Principal:
    if not who.is_admin:
        raise Forbidden("only admins may do this; ask the platform team")
    return who


def agent(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.role != "agent":
        raise Forbidden("this endpoint is for agents; use a host token from `dockyard host token`")
    return who


def request_id(request: Request) -> str:
    rid: str = request.state.request_id
    return rid


DB = Annotated[Session, Depends(session)]
User = Annotated[Principal, Depends(user)]
Admin = Annotated[Principal, Depends(admin)]
Agent = Annotated[Principal, Depends(agent)]
RequestId = Annotated[str, Depends(request_id)]
Watch = Annotated[HostWatch, Depends(watch)]
Db = Annotated[Database, Depends(database)]
