"""Snapshots, cold migrations and drains; the checker that enforces their deadlines.

    POST /v1/instances/{key}/snapshot   member  202 the new image (queued)
    POST /v1/instances/{key}/migrate    admin   202 the migration; live: 501
    POST /v1/hosts/{name}/drain         admin   202 migrations + what fits nowhere
    GET  /v1/migrations[?instance=&host=]       admin: all; members: their project's
    GET  /v1/migrations/{id}

The work happens in db/snapshots.py, db/moves.py and db/move_steps.py; the
state machine is migration/cold.py. ``MoveChecker`` runs in the server process
(one server at a time, under the "migrations" lease): it rolls back migrations
whose deadline passed or whose target host went down, deletes what ended moves
left in the registry (db/move_cleanup.py), and takes and prunes the periodic
snapshots of instances on a schedule (db/schedules.py).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from dockyard import model
from dockyard.api import errors, registry
from dockyard.api.deps import Admin, Db, Key, Member, RequestId, User, Watch
from dockyard.api.loops import LeasedLoop
from dockyard.api.watch import HostWatch
from dockyard.db import (
    instances,
    move_cleanup,
    move_steps,
    moves,
    recoveries,
    schedules,
    snapshots,
)
from dockyard.db.identity import Principal
from dockyard.db.session import Database
from dockyard.errors import Conflict, DockyardError
from dockyard.model.migrations import DrainResult, MigrateRequest, Migration, SnapshotCreate

log = logging.getLogger(__name__)
router = APIRouter(tags=["migrations"])

CRIU_REFUSAL = (
    "live migration needs CRIU, and CRIU does not work on this kernel: Debian 12's criu "
    '3.17 fails `criu check` ("vdso: Failed to fill self vdso symtable") and '
    "bookworm-backports has no newer one; migrate without --live (cold: the instance "
    "stops, moves with its IP, MAC, hostname and data, and starts on the target)"
)


class NotImplementedHere(DockyardError):
    status = 501
    title = "Not implemented"


def _registry_url(primary: registry.RegistrySettings | None, what: str) -> str:
    if primary is None:
        raise Conflict(
            f"{what} needs a registry to push to; start the server with --registry "
            "(`dockyard up` and the lab do)"
        )
    return primary.url


@router.post("/instances/{key}/snapshot", status_code=202)
def snapshot(
    key: Key,
    body: SnapshotCreate,
    who: Member,
    db: Db,
    watch: Watch,
    rid: RequestId,
    primary: registry.Settings,
) -> model.Image:
    """Commit the instance's root fs and push it as a new image (queued until then)."""
    url = _registry_url(primary, "a snapshot")
    with db.session() as s:
        image, host, instance_id = snapshots.create(s, who, key, body, url, rid)
    _wake(watch, [host] if host else [], instance_id)
    return image


_LIVE_REFUSED: dict[int | str, dict[str, Any]] = {
    501: {**errors.RESPONSES[409], "description": "live migration: CRIU does not work here"}
}


@router.post("/instances/{key}/migrate", status_code=202, responses=_LIVE_REFUSED)
def migrate(
    key: Key,
    body: MigrateRequest,
    request: Request,
    who: Admin,
    db: Db,
    watch: Watch,
    rid: RequestId,
    primary: registry.Settings,
) -> Migration:
    """Cold migration: stop, snapshot, push; start on the target with the same identity."""
    if body.live:
        raise NotImplementedHere(CRIU_REFUSAL)
    url = _registry_url(primary, "a migration")

    def claim() -> tuple[Migration, list[str]]:
        with db.session() as s:
            return moves.start(s, who, key, body.host, rid, url, request.app.state.ram_weight)

    mig, wake = db.retry(claim)
    _wake(watch, wake, mig.instance.id)
    return mig


def resize_by_migration(
    request: Request,
    key: str,
    flavor: str,
    who: Principal,
    db: Database,
    watch: HostWatch,
    rid: str,
) -> model.Instance:
    """``resize --allow-migrate`` when the flavor does not fit where the instance runs:
    a migration to a host claimed for ``flavor``, which it takes there."""
    url = _registry_url(request.app.state.registry, "resize --allow-migrate")
    weigh = request.app.state.ram_weight

    def claim() -> tuple[Migration, list[str]]:
        with db.session() as s:
            return moves.start(s, who, key, None, rid, url, weigh, flavor_key=flavor)

    mig, wake = db.retry(claim)
    _wake(watch, wake, mig.instance.id)
    with db.session(write=False) as s:
        return instances.to_model(instances.get(s, who, mig.instance.id))


@router.post("/hosts/{name}/drain", status_code=202)
def drain(
    name: Key,
    request: Request,
    who: Admin,
    db: Db,
    watch: Watch,
    rid: RequestId,
    primary: registry.Settings,
) -> DrainResult:
    """Disable the host ("draining") and migrate each of its instances away."""
    url = _registry_url(primary, "a drain")

    def claim() -> tuple[DrainResult, list[str]]:
        with db.session() as s:
            return moves.drain(s, who, name, rid, url, request.app.state.ram_weight)

    result, wake = db.retry(claim)
    for host in wake:
        watch.notify(host)
    for mig in result.migrations:
        watch.instances.notify(mig.instance.id)
    return result


@router.get("/migrations")
def list_migrations(
    db: Db,
    who: User,
    instance: Annotated[str | None, Query(max_length=63, description="name or id")] = None,
    host: Annotated[str | None, Query(max_length=63, description="source or target")] = None,
) -> list[Migration]:
    with db.session(write=False) as s:
        return moves.list_migrations(s, who, instance, host)


@router.get("/migrations/{migration_id}")
def show_migration(migration_id: Key, db: Db, who: User) -> Migration:
    with db.session(write=False) as s:
        return moves.show(s, who, migration_id)


def _wake(watch: HostWatch, hosts: list[str], instance_id: str) -> None:
    for host in hosts:
        watch.notify(host)
    watch.instances.notify(instance_id)


SCHEDULES_EVERY = 30.0  # seconds between passes over the snapshot schedules (15 min floor)


class MoveChecker(LeasedLoop):
    """Every ``interval`` seconds, while this server holds the "migrations" lease:
    roll back migrations past ``timeout`` or whose target is down (db/move_steps.py);
    with a registry, order due periodic snapshots and prune old ones (db/schedules.py)."""

    def __init__(
        self,
        db: Database,
        watch: HostWatch,
        timeout: timedelta,
        interval: float = 2.0,
        primary: registry.RegistrySettings | None = None,
    ) -> None:
        super().__init__(db, "migrations", interval)
        self.db, self.watch, self.timeout = db, watch, timeout
        self.primary = primary
        self._scheduled = -SCHEDULES_EVERY  # monotonic time of the last schedules pass

    def tick(self) -> list[str]:
        return self.check()

    def check(self, now: datetime | None = None) -> list[str]:
        """One pass (``now``: the schedules' clock, naive UTC); returns the hosts it woke."""
        if not self.lease.held():
            return []
        with self.db.session() as s:
            wake = move_steps.enforce(s, self.timeout)
        for host in wake:
            self.watch.notify(host)
        self.registry_cleanup()
        if now is None and time.monotonic() - self._scheduled < SCHEDULES_EVERY:
            return wake
        self._scheduled = time.monotonic()
        now = now or datetime.now(UTC).replace(tzinfo=None)
        with self.db.session() as s:
            recoveries.expire(s, now)
        return wake + self.snapshot_schedules(now)

    def registry_cleanup(self) -> None:
        """Ended migrations' volume copies and superseded images leave the registry
        (db/move_cleanup.py): rows first, manifests once that committed."""
        if self.primary is None:
            return
        with self.db.session() as s:
            manifests = move_cleanup.sweep(s, self.primary.url)
        if manifests:
            registry.forget_manifests(self.primary, self.db, manifests)

    def snapshot_schedules(self, now: datetime) -> list[str]:
        """Order the due periodic snapshots, prune the old ones: rows first, their
        manifests once that committed (as `image delete`)."""
        if self.primary is None:  # snapshots need a registry to push to
            return []
        with self.db.session() as s:
            due = schedules.due(s, now, self.primary.url)
            gone = schedules.prune(s)
        for host, instance_id in due.ordered:
            _wake(self.watch, [host], instance_id)
        registry.forget_all(self.primary, self.db, due.pruned + gone)
        return [host for host, _ in due.ordered]
