"""Evacuation of a dead host, and letting go of the data it kept (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from dockyard import model
from dockyard.api.deps import Admin, Db, Key, RequestId, Watch
from dockyard.db import evacuation, fencing

router = APIRouter(tags=["hosts"])


@router.post("/hosts/{name}/evacuate", status_code=202)
def evacuate(name: Key, who: Admin, db: Db, watch: Watch, rid: RequestId) -> model.EvacuationResult:
    """Rebuild every instance of a down host elsewhere (same id, IP, MAC, hostname),
    from its newest snapshot or its image. 409 while the host is up. The answer lists
    the evacuations started and the instances that fit nowhere, with why."""

    def claim() -> tuple[model.EvacuationResult, set[str]]:
        with db.session() as s:
            return evacuation.evacuate(s, who, name, rid)

    result, wake = db.retry(claim)
    for host in wake:
        watch.notify(host)
    for moved in result.evacuations:
        watch.instances.notify(moved.instance_id)
    return result


@router.get("/hosts/{name}/evacuations")
def evacuations(name: Key, db: Db, _: Admin) -> list[model.Evacuation]:
    """Every evacuation away from the host: status, what it was rebuilt from, whether
    the host fenced it on its return, and whether its data is still kept there."""
    with db.session(write=False) as s:
        return fencing.for_host(s, name)


@router.post("/migrations/{migration_id}/release")
def release(migration_id: Key, db: Db, watch: Watch, _: Admin) -> model.Evacuation:
    """Let go of the container and volume data an evacuation kept on its old host:
    that host's agent removes them. Recover what you need first."""
    with db.session() as s:
        out, host = fencing.release(s, migration_id)
    watch.notify(host)
    return out
