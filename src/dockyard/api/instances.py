"""Instances (servers): create, list, show, watch, actions, action log."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from dockyard import model
from dockyard.api import moves
from dockyard.api.deps import Db, Key, Member, RequestId, User, Watch
from dockyard.api.volumes import refuse_host_paths
from dockyard.api.watch import HostWatch
from dockyard.db import instances, managed, rebuild, schedules
from dockyard.db.identity import Principal
from dockyard.db.session import Database
from dockyard.errors import Forbidden, NoValidHost

router = APIRouter(tags=["instances"])


@router.post("/instances", status_code=202)
def create_instance(
    body: model.InstanceCreate,
    request: Request,
    response: Response,
    who: Member,
    db: Db,
    watch: Watch,
    rid: RequestId,
) -> model.Instance:
    """Schedule and claim (host, IP, cores) in one transaction; the agent spawns it.
    The answer's ETag is the instance's watch version: ``since`` for its first watch."""
    refuse_host_paths(who, body.volumes)
    schedules.check_every(body.snapshot_every, request.app.state.snapshot_min_every)

    def claim() -> tuple[model.Instance, str]:
        with db.session() as s:
            managed.refuse_group(s, who, body.group, "create")  # a stack's: stack scale
            return instances.create(s, who, body, rid, request.app.state.ram_weight)

    inst, host = db.retry(claim)
    watch.notify(host)
    watch.instances.notify(inst.id)
    return versioned(response, inst)


def versioned(response: Response, inst: model.Instance) -> model.Instance:
    """``inst`` with its watch version as the answer's ETag: a client that waits for it
    to settle starts its watch there, not with a read that answers at once."""
    response.headers["etag"] = f'"{version_of(inst)}"'
    return inst


@router.get("/instances")
def list_instances(db: Db, who: User) -> list[model.Instance]:
    with db.session(write=False) as s:
        return instances.list_instances(s, who)


@router.get("/instances/{key}")
def show_instance(key: Key, db: Db, who: User) -> model.InstanceDetail:
    """The instance and its recent events (OOM kills, pids limit hits, throttling)."""
    with db.session(write=False) as s:
        return instances.show(s, who, key)


@router.patch("/instances/{key}")
def update_instance(
    key: Key,
    body: model.InstanceUpdate,
    request: Request,
    who: Member,
    db: Db,
    watch: Watch,
    rid: RequestId,
) -> model.Instance:
    """Change its periodic snapshots: ``snapshot_every`` seconds (null: off) and
    ``snapshot_keep``; the server's checker takes and prunes them (db/schedules.py)."""
    floor = request.app.state.snapshot_min_every
    with db.session() as s:
        inst = schedules.update(s, who, key, body, floor, rid)
    watch.instances.notify(inst.id)
    return inst


@router.get("/instances/{key}/watch")
async def watch_instance(
    key: Key,
    db: Db,
    who: User,
    watch: Watch,
    since: Annotated[
        str, Query(max_length=64, description="the version you have; empty: answer at once")
    ] = "",
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to hold the request")] = 0,
) -> model.InstanceWatched:
    """Long poll: answer as soon as the instance's version differs from ``since`` (at
    once if it already does), else with the same version after ``wait`` seconds.
    404 for an instance the caller cannot see, 410 once it is deleted."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    # a waiter registers before its first read (one read per wake-up, none wasted);
    # registered before each read, so nothing slips between a read and the wait
    ident, fut = key, watch.instances.register(key) if since else None
    try:
        while True:
            seen, stamp = await run_in_threadpool(_watched, db, who, ident)
            if seen.version != since or deadline <= loop.time():
                return seen
            if fut is None or ident != seen.instance.id:
                if fut is not None:  # registered under a name: notifications carry the id
                    watch.instances.cancel(ident, fut)
                ident = seen.instance.id  # a name resolves once; a deletion then answers 410
                fut = watch.instances.register(ident)
            fut = await _quiet(watch, db, ident, stamp, deadline, fut)
    finally:
        if fut is not None:
            watch.instances.cancel(ident, fut)


FULL_READ_EVERY = 5  # re-reads; the others only compare the instance's stamp


async def _quiet(
    watch: HostWatch,
    db: Database,
    iid: str,
    stamp: instances.Stamp,
    deadline: float,
    fut: asyncio.Future[None],
) -> asyncio.Future[None]:
    """Wait on ``fut`` while nothing the watcher sees can have changed; return the
    future to wait on next, registered before the full read that follows.

    A notification ends the wait at once. The re-read every ``watch.reread`` seconds is
    there for what no notification carries: a state derived from time (a host gone
    silent shows power "unknown") and another server's notification lost while its
    listener reconnected. It compares the instance's stamp (its last update, its
    deletion, its host being up: one narrow query, where the full read loads the
    instance with its joins and hashes its version) and reads everything only every
    FULL_READ_EVERY re-reads (say, a volume's row changed on another server)."""
    loop = asyncio.get_running_loop()
    for _ in range(FULL_READ_EVERY):
        left = deadline - loop.time()
        if left <= 0:
            break
        woken = await watch.instances.wait(iid, fut, min(watch.reread, left))
        fut = watch.instances.register(iid)  # before the next read: nothing slips between
        if woken or deadline <= loop.time():
            break
        try:
            now = await run_in_threadpool(_stamp, db, iid)
        except BaseException:  # the caller's future is gone: this one must not stay
            watch.instances.cancel(iid, fut)
            raise
        if now != stamp:
            break
    return fut


def _watched(
    db: Database, who: Principal, key: str
) -> tuple[model.InstanceWatched, instances.Stamp]:
    with db.session(write=False) as s:
        inst, stamp = instances.watched(s, who, key)
    return model.InstanceWatched(version=version_of(inst), instance=inst), stamp


def _stamp(db: Database, iid: str) -> instances.Stamp | None:
    with db.session(write=False) as s:
        return instances.stamp(s, iid)


def version_of(inst: model.Instance) -> str:
    """Changes whenever anything a user sees of the instance changes (no migration:
    derived from the fields, ``updated_at`` included)."""
    return hashlib.blake2b(inst.model_dump_json().encode(), digest_size=8).hexdigest()


@router.get("/instances/{key}/actions")
def list_actions(key: Key, db: Db, who: User) -> list[model.InstanceAction]:
    with db.session(write=False) as s:
        return instances.actions(s, who, key)


def _act(
    action: str, key: str, who: Member, db: Db, watch: Watch, rid: str, response: Response
) -> model.Instance:
    with db.session() as s:
        out, host = instances.act(s, who, key, action, rid)
    watch.notify(host)
    watch.instances.notify(out.id)
    return versioned(response, out)


@router.post("/instances/{key}/start", status_code=202)
def start(
    key: Key, who: Member, db: Db, watch: Watch, rid: RequestId, response: Response
) -> model.Instance:
    return _act("start", key, who, db, watch, rid, response)


@router.post("/instances/{key}/stop", status_code=202)
def stop(
    key: Key, who: Member, db: Db, watch: Watch, rid: RequestId, response: Response
) -> model.Instance:
    return _act("stop", key, who, db, watch, rid, response)


@router.post("/instances/{key}/reboot", status_code=202)
def reboot(
    key: Key, who: Member, db: Db, watch: Watch, rid: RequestId, response: Response
) -> model.Instance:
    return _act("reboot", key, who, db, watch, rid, response)


@router.post("/instances/{key}/rebuild", status_code=202)
def rebuild_instance(
    key: Key, body: model.InstanceRebuild, who: Member, db: Db, watch: Watch, rid: RequestId
) -> model.Instance:
    """Make its container anew (from another image, env, files or health check),
    keeping its identity, IP and volumes; what was written in its root fs is lost."""
    with db.session() as s:
        managed.refuse_member(s, who, key, "rebuild")  # a stack's member: stack deploy
        out, host = rebuild.rebuild(s, who, key, body, rid)
    watch.notify(host)
    watch.instances.notify(out.id)
    return out


@router.post("/instances/{key}/resize", status_code=202)
def resize(
    key: Key,
    body: model.ResizeRequest,
    request: Request,
    who: Member,
    db: Db,
    watch: Watch,
    rid: RequestId,
) -> model.Instance:
    """Change the flavor of a running instance in place, without a restart; with
    ``allow_migrate`` (admins), by a cold migration when it no longer fits its host."""
    if body.allow_migrate and not who.is_admin:
        raise Forbidden("only admins may move instances (--allow-migrate); ask the platform team")

    def claim() -> tuple[model.Instance, str | None]:
        with db.session() as s:
            managed.refuse_member(s, who, key, "resize")  # its release's flavor
            return instances.resize(s, who, key, body.flavor, rid)

    try:
        inst, host = db.retry(claim)
    except NoValidHost:
        if not body.allow_migrate:
            raise
        return moves.resize_by_migration(request, key, body.flavor, who, db, watch, rid)
    watch.notify(host)
    watch.instances.notify(inst.id)
    return inst


@router.delete("/instances/{key}", status_code=202)
def delete(
    key: Key, who: Member, db: Db, watch: Watch, rid: RequestId, response: Response
) -> model.Instance:
    return _act("delete", key, who, db, watch, rid, response)
