"""Offline data recovery: an admin asks, the host's agent reads the files off its disk
and uploads a tar, the admin downloads it (see db/recoveries.py)."""

from __future__ import annotations

import re
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from dockyard import model
from dockyard.api.deps import Admin, Agent, Db, Key, Watch
from dockyard.api.limits import TooLarge
from dockyard.db import hosts, recoveries
from dockyard.db.session import Database
from dockyard.errors import BadRequest
from dockyard.model.moves import RECOVERY_MAX_BYTES

router = APIRouter(tags=["recovery"])
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@router.post("/instances/{key}/recoveries", status_code=202)
def create(
    key: Key, body: model.RecoveryCreate, who: Admin, db: Db, watch: Watch
) -> model.Recovery:
    """Copy ``path`` (a file or a directory) out of the instance's writable layer or
    named volumes on ``host``: its own host while it is stopped or the host is down, or
    the host an evacuation left its data on. Files of the image's own layers are not
    in the writable layer: recovery gets what the instance wrote. With ``into``, the
    files are written into that instance's filesystem by its host's agent instead."""
    with db.session() as s:
        out, host = recoveries.create(s, who, key, body)
    watch.notify(host)
    watch.recoveries.notify(host)
    return out


@router.get("/recoveries/{recovery_id}")
def show(recovery_id: Key, db: Db, _: Admin) -> model.Recovery:
    with db.session(write=False) as s:
        return recoveries.get(s, recovery_id)


@router.get("/recoveries/{recovery_id}/data", response_class=Response)
def download(recovery_id: Key, db: Db, _: Admin) -> Response:
    """The tar the agent uploaded; its sha256 in the ``x-dockyard-sha256`` header."""
    with db.session(write=False) as s:
        data, digest = recoveries.data(s, recovery_id)
    return Response(data, media_type="application/x-tar", headers={"x-dockyard-sha256": digest})


@router.get("/agent/hosts/{name}/recoveries", tags=["agent"])
async def orders(
    name: Key,
    who: Agent,
    db: Db,
    watch: Watch,
    since: Annotated[
        int, Query(ge=-1, le=2**62, description="generation the agent already has")
    ] = -1,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to hold the request")] = 0,
) -> model.RecoveryOrders:
    """Long poll, as the desired state's: the host's queued recovery orders. Apart from
    the desired state so an agent whose dockerd is gone still gets them.

    The generation is the orders' (db/recoveries.py): 0 while none is queued. It waits
    on ``watch.recoveries``, which only the changes of recoveries below wake (besides
    the re-read every ``watch.reread`` seconds): the host's own registry is woken by
    every create and report on the host, and a burst of 20 creates spent a tenth of
    the server's CPU re-reading orders that had not changed."""
    hosts.check_agent(who.host_name, name)
    read = partial(_orders, db, name)
    return await watch.recoveries.poll(name, since, wait, read, watch.reread)


def _orders(db: Database, name: str) -> model.RecoveryOrders:
    with db.session(write=False) as s:
        return recoveries.orders_for_host(s, name)


@router.put("/agent/recoveries/{recovery_id}/data", status_code=204, tags=["agent"])
async def upload(
    recovery_id: Key,
    request: Request,
    db: Db,
    who: Agent,
    watch: Watch,
    sha256: Annotated[str, Header(alias="x-dockyard-sha256", max_length=64)],
) -> None:
    """The agent's tar of a recovery order, at most RECOVERY_MAX_BYTES."""
    if not SHA256.match(sha256):
        raise BadRequest("x-dockyard-sha256 must be the tar's sha256, 64 hex digits")
    assert who.host_name is not None
    # whose order it is, before reading up to RECOVERY_MAX_BYTES of it
    await run_in_threadpool(_expected, db, who.host_name, recovery_id)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > RECOVERY_MAX_BYTES:
                raise TooLarge(RECOVERY_MAX_BYTES, "a recovery", "RECOVERY_MAX_BYTES")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise BadRequest("the upload stopped before its end; send it again") from exc
    assert who.host_name is not None
    target = await run_in_threadpool(
        _store, db, who.host_name, recovery_id, b"".join(chunks), sha256
    )
    for host in (who.host_name, target):
        watch.notify(host)
        watch.recoveries.notify(host)


def _expected(db: Database, host: str, recovery_id: str) -> None:
    with db.session(write=False) as s:
        recoveries.expected(s, host, recovery_id)


def _store(db: Database, host: str, recovery_id: str, data: bytes, sha256: str) -> str | None:
    with db.session() as s:
        return recoveries.store(s, host, recovery_id, data, sha256)


@router.post("/agent/recoveries/{recovery_id}/failure", status_code=204, tags=["agent"])
def failure(
    recovery_id: Key, body: model.RecoveryFailure, db: Db, who: Agent, watch: Watch
) -> None:
    """The agent could not read the path: why (not there, deleted, escapes the instance)."""
    assert who.host_name is not None
    with db.session() as s:
        recoveries.fail(s, who.host_name, recovery_id, body.error)
    watch.notify(who.host_name)
    watch.recoveries.notify(who.host_name)


@router.get("/agent/recoveries/{recovery_id}/data", response_class=Response, tags=["agent"])
def delivery_data(recovery_id: Key, db: Db, who: Agent) -> Response:
    """The tar of a recovery this host's agent is to write into one of its instances."""
    assert who.host_name is not None
    with db.session(write=False) as s:
        data, digest = recoveries.delivery_data(s, who.host_name, recovery_id)
    return Response(data, media_type="application/x-tar", headers={"x-dockyard-sha256": digest})


@router.post("/agent/recoveries/{recovery_id}/delivered", status_code=204, tags=["agent"])
def delivered(recovery_id: Key, db: Db, who: Agent, watch: Watch) -> None:
    """The target's agent wrote the recovered files into its instance."""
    assert who.host_name is not None
    with db.session() as s:
        recoveries.delivered(s, who.host_name, recovery_id)
    watch.notify(who.host_name)
    watch.recoveries.notify(who.host_name)
