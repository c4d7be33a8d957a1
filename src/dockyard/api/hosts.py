"""Hosts for admins, and the agent's side: register, heartbeat, desired state, reports."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request

from dockyard import model
from dockyard.api import registry
from dockyard.api.deps import Admin, Agent, Db, Key, User, Watch
from dockyard.api.registry import RegistrySettings
from dockyard.db import drift, hosts, instances, move_steps, registry_gc
from dockyard.db.session import Database

router = APIRouter(tags=["hosts"])


@router.get("/hosts")
def list_hosts(db: Db, _: Admin) -> list[model.Host]:
    with db.session(write=False) as s:
        return hosts.list_hosts(s)


@router.get("/hosts/{name}")
def show_host(name: Key, db: Db, _: Admin) -> model.Host:
    with db.session(write=False) as s:
        return hosts.show_host(s, name)


@router.patch("/hosts/{name}")
def update_host(name: Key, body: model.HostUpdate, db: Db, _: Admin) -> model.Host:
    with db.session() as s:
        return hosts.update_host(s, name, body)


@router.get("/availability-zones")
def list_zones(db: Db, _: User) -> list[model.AvailabilityZone]:
    with db.session(write=False) as s:
        return hosts.availability_zones(s)


@router.post("/agent/hosts", status_code=200, tags=["agent"])
def register(body: model.HostRegister, request: Request, db: Db, who: Agent) -> model.Host:
    """The host's address is the one its agent calls from (its /metrics is scraped there)."""
    hosts.check_agent(who.host_name, body.name)
    with db.session() as s:
        return hosts.register(s, body, request.client.host if request.client else "")


@router.post("/agent/hosts/{name}/heartbeat", tags=["agent"])
def heartbeat(
    name: Key, db: Db, who: Agent, body: model.HostStatus | None = None
) -> model.Beat:
    """Alive; with a body (newer agents), the host's baseline and its instances' drift.
    The answer sets the agent's pace: three beats within this server's
    --host-down-after, so a short one does not make its hosts flap down and up."""
    hosts.check_agent(who.host_name, name)
    with db.session() as s:
        generation = hosts.heartbeat(s, name)
        if body is not None:
            drift.record(s, name, body)
    return model.Beat(generation=generation, beat_every=beat_every(db))


def beat_every(db: Database) -> float:
    """A third of the time a host may stay silent, within 0.2 s and 10 s."""
    return max(0.2, min(10.0, db.host_down_after.total_seconds() / 3))


@router.get("/agent/hosts/{name}/desired", tags=["agent"])
async def desired(
    name: Key,
    who: Agent,
    db: Db,
    watch: Watch,
    primary: registry.Settings,
    since: Annotated[
        int, Query(ge=-1, le=2**62, description="generation the agent already has")
    ] = -1,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to hold the request")] = 0,
) -> model.DesiredState:
    """Long poll: answer as soon as the host's generation differs from ``since``.

    Each wake-up (a change anywhere on the host, a report, the periodic re-read) reads
    the generation alone first: the whole state is built only when there is news or
    the wait is over."""
    hosts.check_agent(who.host_name, name)
    read = partial(_desired, db, name, primary)
    unchanged = partial(_generation_is, db, name)
    return await watch.poll(name, since, wait, read, watch.reread, unchanged)


def _generation_is(db: Database, name: str, generation: int) -> bool:
    with db.session(write=False) as s:
        return hosts.generation(s, name) == generation


def _desired(db: Database, name: str, primary: RegistrySettings | None) -> model.DesiredState:
    with db.session(write=False) as s:
        state = move_steps.desired(s, name, instances.desired_for_host(s, name))
        state = registry_gc.withhold(s, state)  # no push ordered during a registry GC
    login = primary.pull_login() if primary else None
    for inst in state.instances:
        if inst.image_pulls and login is not None:
            inst.image_pull_login = login  # the caches take the same logins as the primary
        if inst.snapshot is not None:
            inst.snapshot.login = login  # any registry login may push
    return state


@router.post("/agent/instances/{instance_id}/events", status_code=204, tags=["agent"])
def events(instance_id: Key, body: list[model.InstanceEvent], db: Db, who: Agent) -> None:
    assert who.host_name is not None
    with db.session() as s:
        instances.record_events(s, who.host_name, instance_id, body)


@router.put("/agent/instances/{instance_id}/state", status_code=204, tags=["agent"])
def report(
    instance_id: Key, body: model.InstanceReport, request: Request, db: Db, who: Agent, watch: Watch
) -> None:
    assert who.host_name is not None
    with db.session() as s:
        # a snapshot's or a migration's report goes to db/move_steps.py
        woken = move_steps.on_report(
            s, who.host_name, instance_id, body, request.app.state.migration_timeout
        )
        if woken is None:
            instances.report(s, who.host_name, instance_id, body)
    watch.instances.notify(instance_id)  # users waiting on it (`--wait`): their read first
    for host in woken or []:
        watch.notify(host)
    watch.notify(who.host_name)
