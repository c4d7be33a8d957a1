"""Continuous integration: hooks, the git webhook, builds and their logs (model/builds.py
draws the flow; paas/README.md "Builds" tells the rules).

    POST   /v1/apps/{app}/hooks              member  201 the hook, its secret shown once
    GET    /v1/apps/{app}/hooks              reader  (never a secret)
    DELETE /v1/apps/{app}/hooks/{id}         member
    POST   /v1/apps/{app}/hooks/git          NO token: the delivery's signature decides
                                             401 unsigned/bad, 202 builds or ``ignored``,
                                             200 a ping, 400 not a push payload
    POST   /v1/apps/{app}/builds             member  201 a build of a ref, by hand
    GET    /v1/builds[?app=], /v1/builds/{id}        reader
    GET    /v1/builds/{id}/log?offset=&wait=         reader  long poll while it runs
    POST   /v1/builds/{id}/cancel            member

The agents' side is api/build_orders.py; ``BuildController`` (here) times builds out
and hands queued ones to build hosts that came up.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dockyard.api.deps import Db, Key, Member, User, Watch
from dockyard.api.loops import LeasedLoop
from dockyard.api.watch import HostWatch
from dockyard.db import build_log, build_runs, builds
from dockyard.db.identity import Principal
from dockyard.db.session import Database
from dockyard.model import builds as wire
from dockyard.paas import webhooks

log = logging.getLogger(__name__)
router = APIRouter(tags=["builds"])


def limits(request: Request) -> builds.Limits:
    found: builds.Limits = request.app.state.build_limits
    return found


def has_registry(request: Request) -> bool:
    return getattr(request.app.state, "registry", None) is not None


def wake(watch: HostWatch, hosts: list[str], build_ids: list[str] | None = None) -> None:
    """After the commit: the build hosts' order polls, and the readers of these builds'
    logs (kept in the instances' registry: build ids are UUIDs as instance ids are)."""
    for host in sorted(set(hosts)):
        watch.notify(host)
        watch.builds.notify(host)
    for build_id in build_ids or []:
        watch.instances.notify(build_id)


# hooks ------------------------------------------------------------------------------


@router.post("/apps/{app}/hooks", status_code=201)
def create_hook(app: Key, body: wire.HookCreate, db: Db, who: Member) -> wire.Hook:
    """The hook; ``secret`` is in this answer only (the server's own if none was sent):
    give it to the git host with the hook's ``url``."""
    with db.session() as s:
        return builds.create_hook(s, who, app, body)


@router.get("/apps/{app}/hooks")
def list_hooks(app: Key, db: Db, who: User) -> list[wire.Hook]:
    with db.session(write=False) as s:
        return builds.list_hooks(s, who, app)


@router.delete("/apps/{app}/hooks/{hook_id}", status_code=204)
def delete_hook(app: Key, hook_id: Key, db: Db, who: Member) -> Response:
    with db.session() as s:
        builds.delete_hook(s, who, app, hook_id)
    return Response(status_code=204)


@router.post(
    "/apps/{app}/hooks/git",
    status_code=202,
    response_model=wire.PushAccepted,
    responses={200: {"model": wire.PushAccepted, "description": "a ping"}},
)
async def git_push(app: Key, request: Request, db: Db, watch: Watch) -> JSONResponse:
    """A git host's push (GitHub: X-Hub-Signature-256 HMAC of the body, X-GitHub-Event;
    GitLab: X-Gitlab-Token, X-Gitlab-Event). No bearer token: the signature must
    verify against one of the app's hooks' secrets, or 401 and nothing starts. A
    build per hook following the pushed branch, cloning the hook's repository."""
    body = await request.body()  # the server's body limit applied before this
    sig = webhooks.signature(request.headers)
    lim, registry = limits(request), has_registry(request)
    out, ping, hosts = await run_in_threadpool(_push, db, app, body, sig, lim, registry)
    wake(watch, hosts, out.builds)
    return JSONResponse(out.model_dump(mode="json"), status_code=200 if ping else 202)


def _push(
    db: Database,
    app: str,
    body: bytes,
    sig: webhooks.Signature | None,
    lim: builds.Limits,
    registry: bool,
) -> tuple[wire.PushAccepted, bool, list[str]]:
    with db.session(write=False) as s:  # no writer's lock until a delivery verified
        verified = builds.verify_push(s, app, body, sig, registry)
    if verified.answer is not None:
        return verified.answer, verified.ping, []
    with db.session() as s:
        answer, woke = builds.queue_push(s, verified, lim)
    return answer, False, woke


# builds ------------------------------------------------------------------------------


@router.post("/apps/{app}/builds", status_code=201)
def start_build(
    app: Key, body: wire.BuildStart, request: Request, db: Db, who: Member, watch: Watch
) -> wire.Build:
    """A build of ``ref`` (a branch, a tag or a commit) through one of the app's hooks."""
    with db.session() as s:
        out, hosts = builds.start(s, who, app, body, limits(request), has_registry(request))
    wake(watch, hosts)
    return out


@router.get("/builds")
def list_builds(
    db: Db,
    who: User,
    app: Annotated[str | None, Query(min_length=1, max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[wire.Build]:
    """Newest first, of the caller's project (an admin's: all)."""
    with db.session(write=False) as s:
        return builds.list_builds(s, who, app, limit)


@router.get("/builds/{build_id}")
def show_build(build_id: Key, db: Db, who: User) -> wire.Build:
    with db.session(write=False) as s:
        return builds.get(s, who, build_id)


@router.post("/builds/{build_id}/cancel")
def cancel_build(build_id: Key, db: Db, who: Member, watch: Watch) -> wire.Build:
    """Its order leaves its host's poll: the agent stops it."""
    with db.session() as s:
        out, hosts = builds.cancel(s, who, build_id)
    wake(watch, hosts, [build_id])
    return out


@router.get("/builds/{build_id}/log")
async def build_log_text(
    build_id: Key,
    db: Db,
    who: User,
    watch: Watch,
    offset: Annotated[int, Query(ge=0, le=2**62, description="the byte to read from")] = 0,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to hold the request")] = 0,
) -> wire.BuildLog:
    """The log from ``offset`` on. With ``wait``: held while nothing new has come and
    the build is not done, answered as soon as a chunk arrives or it ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        fut = watch.instances.register(build_id)  # before reading: no chunk slips between
        seen = await run_in_threadpool(_read, db, who, build_id, offset)
        left = deadline - loop.time()
        if seen.text or seen.done or left <= 0:
            watch.instances.cancel(build_id, fut)
            return seen
        await watch.instances.wait(build_id, fut, min(watch.reread, left))


def _read(db: Database, who: Principal, build_id: str, offset: int) -> wire.BuildLog:
    with db.session(write=False) as s:
        return build_log.read(s, who, build_id, offset)


# the controller -------------------------------------------------------------------------


class BuildController(LeasedLoop):
    """Fails builds past their timeout and requeues those whose host went away before
    they started, then assigns queued builds: every ``interval`` seconds in a thread,
    on the server holding the "builds" lease (as the deploy controller does).
    ``step(now)`` is one pass (tests drive it with their clock; ``interval=None``
    starts no thread)."""

    def __init__(self, db: Database, watch: HostWatch, interval: float | None = 2.0) -> None:
        super().__init__(db, "builds", interval)
        self.db, self.watch = db, watch

    def tick(self) -> list[str]:
        return self.step()

    def step(self, now: datetime | None = None) -> list[str]:
        """One pass (``now``: naive UTC); returns the hosts it woke."""
        if not self.lease.held():
            return []
        now = now or datetime.now(UTC).replace(tzinfo=None)
        with self.db.session(write=False) as s:
            if not build_runs.active(s):  # no write lock taken every tick for nothing
                return []
        with self.db.session() as s:
            woke = build_runs.tick(s, now)
        wake(self.watch, woke)
        return woke
