"""Instances (servers): create, list, show, actions, action log."""

from __future__ import annotations

from fastapi import APIRouter, Request

from dockyard import model
from dockyard.api.deps import Db, Key, Member, RequestId, User, Watch
from dockyard.api.volumes import refuse_host_paths
from dockyard.db import instances

router = APIRouter(tags=["instances"])


@router.post("/instances", status_code=202)
def create_instance(
    body: model.InstanceCreate, request: Request, who: Member, db: Db, watch: Watch, rid: RequestId
) -> model.Instance:
    """Schedule and claim (host, IP, cores) in one transaction; the agent spawns it."""
    refuse_host_paths(who, body.volumes)

    def claim() -> tuple[model.Instance, str]:
        with db.session() as s:
            return instances.create(s, who, body, rid, request.app.state.ram_weight)

    inst, host = db.retry(claim)
    watch.notify(host)
    return inst


@router.get("/instances")
def list_instances(db: Db, who: User) -> list[model.Instance]:
    with db.session(write=False) as s:
        return instances.list_instances(s, who)


@router.get("/instances/{key}")
def show_instance(key: Key, db: Db, who: User) -> model.InstanceDetail:
    """The instance and its recent events (OOM kills, pids limit hits, throttling)."""
    with db.session(write=False) as s:
        return instances.detail(s, instances.get(s, who, key))


@router.get("/instances/{key}/actions")
def list_actions(key: Key, db: Db, who: User) -> list[model.InstanceAction]:
    with db.session(write=False) as s:
        return instances.actions(s, who, key)


def _act(action: str, key: str, who: Member, db: Db, watch: Watch, rid: str) -> model.Instance:
    with db.session() as s:
        out, host = instances.act(s, who, key, action, rid)
    watch.notify(host)
    return out


@router.post("/instances/{key}/start", status_code=202)
def start(key: Key, who: Member, db: Db, watch: Watch, rid: RequestId) -> model.Instance:
    return _act("start", key, who, db, watch, rid)


@router.post("/instances/{key}/stop", status_code=202)
def stop(key: Key, who: Member, db: Db, watch: Watch, rid: RequestId) -> model.Instance:
    return _act("stop", key, who, db, watch, rid)


@router.post("/instances/{key}/reboot", status_code=202)
def reboot(key: Key, who: Member, db: Db, watch: Watch, rid: RequestId) -> model.Instance:
    return _act("reboot", key, who, db, watch, rid)


@router.post("/instances/{key}/resize", status_code=202)
def resize(
    key: Key, body: model.ResizeRequest, who: Member, db: Db, watch: Watch, rid: RequestId
) -> model.Instance:
    """Change the flavor of a running instance in place, without a restart."""

    def claim() -> tuple[model.Instance, str | None]:
        with db.session() as s:
            return instances.resize(s, who, key, body.flavor, rid)

    inst, host = db.retry(claim)
    watch.notify(host)
    return inst


@router.delete("/instances/{key}", status_code=202)
def delete(key: Key, who: Member, db: Db, watch: Watch, rid: RequestId) -> model.Instance:
    return _act("delete", key, who, db, watch, rid)
