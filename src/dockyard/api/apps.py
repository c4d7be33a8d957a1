"""The PaaS: apps, their stacks, releases, deploys and endpoints (paas/README.md).

    POST   /v1/apps                                         member  201 the app
    GET    /v1/apps, /v1/apps/{app}                         reader
    DELETE /v1/apps/{app}                                   member  409 while it has stacks
    POST   /v1/apps/{app}/stacks                            member  201 the stack, release 1
    GET    /v1/apps/{app}/stacks[/{stack}]                  reader
    DELETE /v1/apps/{app}/stacks/{stack}                    member  its instances too
    POST   /v1/apps/{app}/stacks/{stack}/deploys            member  202; 409 while one runs
    POST   /v1/apps/{app}/stacks/{stack}/rollback           member  202 a deploy
    GET    /v1/apps/{app}/stacks/{stack}/deploys/{id}       reader
    POST   /v1/apps/{app}/stacks/{stack}/scale              member
    GET    /v1/apps/{app}/stacks/{stack}/releases           reader
    GET    /v1/apps/{app}/stacks/{stack}/endpoints          reader  long poll: ?version=&wait=

Every change commits before the answer, and is run again when it lost a race in the
database (a deadlock, a serialization failure: db.retry), as claims are; the deploy
controller (api/deploys.py) rolls out what a deploy asked for.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from dockyard.api.deploys import DeployController
from dockyard.api.deps import Db, Key, Member, RequestId, User, Watch
from dockyard.api.watch import HostWatch
from dockyard.db import deploys, paas
from dockyard.db.identity import Principal
from dockyard.db.session import Database
from dockyard.model import paas as wire

router = APIRouter(tags=["paas"])
STACK = "/apps/{app}/stacks/{stack}"


def _wake(request: Request, watch: HostWatch, hosts: list[str]) -> None:
    for host in sorted(set(hosts)):
        watch.notify(host)
    controller: DeployController | None = request.app.state.deploy_controller
    if controller is not None:
        controller.kick()


@router.post("/apps", status_code=201)
def create_app(body: wire.AppCreate, db: Db, who: Member) -> wire.App:
    def claim() -> wire.App:
        with db.session() as s:
            return paas.create_app(s, who, body)

    return db.retry(claim)


@router.get("/apps")
def list_apps(db: Db, who: User) -> list[wire.App]:
    with db.session(write=False) as s:
        return paas.list_apps(s, who)


@router.get("/apps/{app}")
def show_app(app: Key, db: Db, who: User) -> wire.App:
    with db.session(write=False) as s:
        return paas.app_model(s, paas.get_app(s, who, app))


@router.delete("/apps/{app}", status_code=204)
def delete_app(app: Key, db: Db, who: Member, watch: Watch) -> Response:
    """Its hooks and builds too (a running build's order leaves its host's poll)."""

    def claim() -> list[str]:
        with db.session() as s:
            return paas.delete_app(s, who, app)

    for host in db.retry(claim):
        watch.notify(host)
        watch.builds.notify(host)  # its builds' orders are gone
    return Response(status_code=204)


@router.post("/apps/{app}/stacks", status_code=201)
def create_stack(
    app: Key,
    body: wire.StackCreate,
    request: Request,
    db: Db,
    who: Member,
    watch: Watch,
    rid: RequestId,
) -> wire.Stack:
    """The stack, its server group, release 1 and all its replicas in one transaction:
    a quota or placement refusal leaves nothing. Its instances then start as any do."""

    def claim() -> tuple[wire.Stack, list[str]]:
        with db.session() as s:
            return paas.create_stack(s, who, app, body, rid, request.app.state.ram_weight)

    out, hosts = db.retry(claim)
    _wake(request, watch, hosts)
    return out


@router.get("/apps/{app}/stacks")
def list_stacks(app: Key, db: Db, who: User) -> list[wire.Stack]:
    with db.session(write=False) as s:
        return paas.list_stacks(s, who, app)


@router.get(STACK)
def show_stack(app: Key, stack: Key, db: Db, who: User) -> wire.Stack:
    """Replicas, ready, the current release, the latest deploy, each instance's host,
    IP, release and health, and the stack's recent events."""
    with db.session(write=False) as s:
        return paas.stack_model(s, paas.get_stack(s, who, app, stack))


@router.delete(STACK, status_code=204)
def delete_stack(
    app: Key, stack: Key, request: Request, db: Db, who: Member, watch: Watch, rid: RequestId
) -> Response:
    def claim() -> list[str]:
        with db.session() as s:
            return paas.delete_stack(s, who, app, stack, rid)

    _wake(request, watch, db.retry(claim))
    return Response(status_code=204)


@router.post(STACK + "/deploys", status_code=202)
def deploy(
    app: Key,
    stack: Key,
    body: wire.DeployCreate,
    request: Request,
    db: Db,
    who: Member,
    watch: Watch,
) -> wire.Deploy:
    """A new release (the current one with these changes), rolled out by the stack's
    strategy; 409 while another deploy of the stack runs."""
    def claim() -> wire.Deploy:
        with db.session() as s:
            return deploys.deploy(s, who, app, stack, body)

    out = db.retry(claim)
    _wake(request, watch, [])
    return out


@router.post(STACK + "/rollback", status_code=202)
def rollback(
    app: Key,
    stack: Key,
    body: wire.RollbackRequest,
    request: Request,
    db: Db,
    who: Member,
    watch: Watch,
) -> wire.Deploy:
    """An earlier release (``to``, default the previous that ran) deployed as a new one."""
    def claim() -> wire.Deploy:
        with db.session() as s:
            return deploys.rollback(s, who, app, stack, body)

    out = db.retry(claim)
    _wake(request, watch, [])
    return out


@router.get(STACK + "/deploys/{deploy_id}")
def show_deploy(app: Key, stack: Key, deploy_id: Key, db: Db, who: User) -> wire.Deploy:
    with db.session(write=False) as s:
        return deploys.get(s, who, app, stack, deploy_id)


@router.post(STACK + "/scale")
def scale(
    app: Key,
    stack: Key,
    body: wire.ScaleRequest,
    request: Request,
    db: Db,
    who: Member,
    watch: Watch,
    rid: RequestId,
) -> wire.Stack:
    """Instances of the current release created or deleted now; 409 while a deploy runs."""

    def claim() -> tuple[wire.Stack, list[str]]:
        with db.session() as s:
            weigh = request.app.state.ram_weight
            return paas.scale(s, who, app, stack, body.replicas, rid, weigh)

    out, hosts = db.retry(claim)
    _wake(request, watch, hosts)
    return out


@router.get(STACK + "/releases")
def releases(app: Key, stack: Key, db: Db, who: User) -> list[wire.Release]:
    with db.session(write=False) as s:
        return paas.releases(s, who, app, stack)


@router.get(STACK + "/endpoints")
async def endpoints(
    app: Key,
    stack: Key,
    db: Db,
    who: User,
    watch: Watch,
    version: Annotated[
        str, Query(max_length=64, description="the version you have; empty: answer at once")
    ] = "",
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to hold the request")] = 0,
) -> wire.Endpoints:
    """The ready members' IP and port. Long poll: with ``version``, answered as soon as
    the list differs from it, else with the same list after ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        # register on every member before reading: a report between read and wait wakes us
        ids = await run_in_threadpool(_member_ids, db, who, app, stack)
        futs = {i: watch.instances.register(i) for i in ids}
        try:
            seen = await run_in_threadpool(_endpoints, db, who, app, stack)
            left = deadline - loop.time()
            if seen.version != version or left <= 0:
                return seen
            if futs:  # asyncio.wait leaves them pending on a timeout: cancelled below
                await asyncio.wait(list(futs.values()), timeout=min(watch.reread, left))
            else:
                await asyncio.sleep(min(watch.reread, left))
        finally:
            for i, fut in futs.items():
                watch.instances.cancel(i, fut)


def _member_ids(db: Database, who: Principal, app: str, stack: str) -> list[str]:
    with db.session(write=False) as s:
        return paas.member_ids(s, who, app, stack)


def _endpoints(db: Database, who: Principal, app: str, stack: str) -> wire.Endpoints:
    with db.session(write=False) as s:
        return paas.endpoints(s, who, app, stack)
