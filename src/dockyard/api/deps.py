"""Request-scoped dependencies: the database, the caller, the request id, path keys.

Handlers open their own ``with db.session() as s:`` and return wire models built
inside it, so the commit runs before the answer is sent (see docs/architecture.md,
"The request path"). There is deliberately no session dependency: FastAPI runs a
yield dependency's exit after the response (or, function-scoped, in another
worker thread than the handler), and a session that holds SQLite's write lock
while waiting for a free thread deadlocks the server once every thread waits
for that lock.

The dependencies that only look at the request or at the caller already found are
``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, and each
such hop costs a thread hand-off on every request (a create went through seven).
Only ``caller`` reads the database, so only it takes a thread.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from dockyard.api.watch import HostWatch
from dockyard.db.identity import Principal, authenticate
from dockyard.db.session import Database
from dockyard.errors import Forbidden, Unauthorized


async def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def watch(request: Request) -> HostWatch:
    w: HostWatch = request.app.state.watch
    return w


def caller(request: Request, db: Annotated[Database, Depends(database)]) -> Principal:
    """The caller, looked up in the database on every request (one indexed query).

    No cache: a token revoked, expired or whose user was disabled is refused by
    every server as soon as that change has committed.
    """
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send 'Authorization: Bearer <token>'; set DOCKYARD_TOKEN for the CLI")
    with db.session(write=False) as s:
        return authenticate(s, token)


async def principal(who: Annotated[Principal, Depends(caller)]) -> Principal:
    """The caller, unless it is the monitoring token (which reads /v1/monitoring only)."""
    if who.role == "monitoring":
        raise Forbidden("the monitoring token may only read /v1/monitoring; use a user token")
    return who


async def user(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.role == "agent":
        raise Forbidden("agent tokens may only call /v1/agent endpoints; use a user token")
    return who


async def member(request: Request, who: Annotated[Principal, Depends(user)]) -> Principal:
    """A user who may change its project's things (a member, or an admin)."""
    if who.role not in ("member", "admin"):
        verb = _VERBS.get(request.url.path.rstrip("/").rsplit("/", 1)[-1], "change")
        noun = next((n for p, n in _NOUNS if p in request.url.path), "instances")
        if request.method == "DELETE":
            verb = "delete"
        elif request.method == "POST" and verb == "change":
            verb = "create"
        raise Forbidden(
            f"readers cannot {verb} {noun}; ask an admin for the member role "
            f"(`dockyard user set-role {who.name} member`)"
        )
    return who


_NOUNS = (("/volumes", "volumes"), ("/server-groups", "server groups"), ("/images", "images"))
_VERBS = {"start": "start", "stop": "stop", "reboot": "reboot", "resize": "resize"}


async def admin(who: Annotated[Principal, Depends(user)]) -> Principal:
    if not who.is_admin:
        raise Forbidden("only admins may do this; ask the platform team")
    return who


async def agent(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if who.role != "agent":
        raise Forbidden("this endpoint is for agents; use a host token from `dockyard host token`")
    return who


async def monitoring(who: Annotated[Principal, Depends(caller)]) -> Principal:
    """Prometheus (the monitoring token) or an admin."""
    if who.role != "monitoring" and not who.is_admin:
        raise Forbidden(
            "only admins and the monitoring token may read /v1/monitoring; give Prometheus "
            "the token in the server's state dir (monitoring.token)"
        )
    return who


async def request_id(request: Request) -> str:
    rid: str = request.state.request_id
    return rid


User = Annotated[Principal, Depends(user)]
Member = Annotated[Principal, Depends(member)]
Admin = Annotated[Principal, Depends(admin)]
Agent = Annotated[Principal, Depends(agent)]
Monitoring = Annotated[Principal, Depends(monitoring)]
RequestId = Annotated[str, Depends(request_id)]
Watch = Annotated[HostWatch, Depends(watch)]
Db = Annotated[Database, Depends(database)]
Key = Annotated[
    str,
    Path(
        min_length=1,
        max_length=63,
        pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9_.-]*[a-zA-Z0-9])?$",
        description="a name or an id",
    ),
]
