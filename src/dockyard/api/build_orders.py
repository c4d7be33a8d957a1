"""The build hosts' agents: their build orders (a long poll) and their reports.

    GET  /v1/agent/hosts/{name}/builds?since=&wait=   BuildOrders: assigned and running
    POST /v1/agent/builds/{id}/start                  204; 409 not this host's / ended
    POST /v1/agent/builds/{id}/log?offset=N           text/plain, appended idempotently
    POST /v1/agent/builds/{id}/done                   BuildDone: image, auto deploy
    POST /v1/agent/builds/{id}/failure                BuildFailure

Every report on a build the host no longer has (cancelled, timed out, another host's,
its app deleted) is 409: the agent stops working on it (model/builds.py).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from dockyard.api.builds import wake
from dockyard.api.deploys import DeployController
from dockyard.api.deps import Agent, Db, Key, Watch
from dockyard.api.registry import settings
from dockyard.db import build_log, build_runs, hosts
from dockyard.db.session import Database
from dockyard.model import RegistryLogin
from dockyard.model import builds as wire

router = APIRouter(tags=["agent"])


@router.get("/agent/hosts/{name}/builds")
async def orders(
    name: Key,
    request: Request,
    who: Agent,
    db: Db,
    watch: Watch,
    since: Annotated[
        int, Query(ge=-1, le=2**62, description="generation the agent already has")
    ] = -1,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to hold the request")] = 0,
) -> wire.BuildOrders:
    """Long poll: the host's build orders, answered as soon as their generation differs
    from ``since`` (an order came or went), else after ``wait`` seconds. It waits on
    ``watch.builds``, which ``builds.wake`` wakes: not on every create and report on
    the host, as the host's own registry is."""
    hosts.check_agent(who.host_name, name)
    primary = settings(request)
    url, login = (primary.url, primary.pull_login()) if primary else (None, None)
    read = partial(_orders, db, name, url, login)
    return await watch.builds.poll(name, since, wait, read, watch.reread)


def _orders(
    db: Database, name: str, url: str | None, login: RegistryLogin | None
) -> wire.BuildOrders:
    with db.session(write=False) as s:
        return build_runs.orders_for_host(s, name, url, login)


@router.post("/agent/builds/{build_id}/start", status_code=204)
def start(build_id: Key, db: Db, who: Agent, watch: Watch) -> None:
    assert who.host_name is not None
    with db.session() as s:
        build_runs.start(s, who.host_name, build_id)
    wake(watch, [], [build_id])


@router.post("/agent/builds/{build_id}/log", status_code=204)
async def append_log(
    build_id: Key,
    request: Request,
    db: Db,
    who: Agent,
    watch: Watch,
    offset: Annotated[int, Query(ge=0, le=2**62, description="the chunk's first byte")],
) -> None:
    """A chunk of the log (the body, text/plain) at byte ``offset``; bytes already
    stored are not stored twice; a gap is 409 naming the offset to send from."""
    assert who.host_name is not None
    data = await request.body()  # bounded by the server's --max-body-mb
    new = await run_in_threadpool(_append, db, who.host_name, build_id, offset, data)
    if new:
        wake(watch, [], [build_id])


def _append(db: Database, host: str, build_id: str, offset: int, data: bytes) -> bool:
    with db.session() as s:
        return build_log.append(s, host, build_id, offset, data)


@router.post("/agent/builds/{build_id}/done", status_code=204)
def done(
    build_id: Key, body: wire.BuildDone, request: Request, db: Db, who: Agent, watch: Watch
) -> None:
    """Pushed: the image is recorded; with auto_deploy its stack's deploy begins."""
    assert who.host_name is not None
    primary = settings(request)
    with db.session() as s:
        woke, began = build_runs.done(
            s, who.host_name, build_id, body, primary.url if primary else None
        )
    wake(watch, [who.host_name, *woke], [build_id])
    controller: DeployController | None = request.app.state.deploy_controller
    if began and controller is not None:
        controller.kick()


@router.post("/agent/builds/{build_id}/failure", status_code=204)
def failure(build_id: Key, body: wire.BuildFailure, db: Db, who: Agent, watch: Watch) -> None:
    assert who.host_name is not None
    with db.session() as s:
        woke = build_runs.fail(s, who.host_name, build_id, body)
    wake(watch, [who.host_name, *woke], [build_id])
