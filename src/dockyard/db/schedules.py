"""Periodic snapshots: an instance's schedule, the orders it makes, what it prunes.

    server create|update --snapshot-every 6h [--snapshot-keep 3]
        └─► instance.snapshot_every (s), snapshot_keep            update(): PATCH
    each pass of the checker (api/moves.py, under the "migrations" lease):
        due(now) ─► per instance on a schedule, its period past since its last
                    periodic snapshot (or its creation), on an up host, no task:
                    within the project's ``snapshots`` quota (fit(): its own oldest
                    periodic snapshots pruned to make room, never its newest good
                    one; else skipped, the reason in its action log once),
                    Image(queued, periodic, NAME-auto-YYYYMMDDHHMM) and the task
                    snapshotting, as `server snapshot` does (db/snapshots.py)
        prune()  ─► its periodic images older than the newest K active ones:
                    rows deleted here; the caller deletes their manifests after
                    the commit, as `image delete` does (api/registry.py)

Which instances are snapshotted:
- ACTIVE, no task: committed as it runs (not consistent: a schedule must not
  cause downtime).
- SHUTOFF: once, when due after it stopped; then not again until it runs: its
  disk does not change while it is off, and identical copies would push the
  older, different ones out of the K kept.
- anything else (building, migrating, resizing, snapshotting, ERROR, a host
  that is down): skipped; a later pass takes it once it settles.

A periodic snapshot is held to the project's ``snapshots`` quota like a manual
one (both count in its usage; migration images do not). Manual snapshots are
neither counted in K nor pruned. Never pruned (skipped with a log line): an
image a live instance runs (created or evacuated from it) and one a move in
flight or an evacuation's kept data names. Turning a schedule off, or deleting
the instance, keeps the snapshots taken (they are images like others).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import catalog, hosts, instance_log, instances, quotas, snapshots
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Unprocessable
from dockyard.model import TaskState, VmState
from dockyard.units import format_duration

log = logging.getLogger(__name__)

WHO = "scheduler"  # the action log's user for what a schedule does
SKIPPED = "snapshot-skipped"  # its action when the quota has no room
_IN_FLIGHT = ("queued", "snapshotting", "starting")  # migration/cold.py IN_FLIGHT
_STAMP = "%Y%m%d%H%M"
_BASE = 63 - len("-auto-") - len(_STAMP) - 4 - len("-12345678")  # room for the suffix


def check_every(every: int | None, floor: int) -> None:
    """Refuse a period under this server's floor (--snapshot-min-every)."""
    if every is not None and every < floor:
        raise Unprocessable(
            f"snapshot_every {format_duration(every)} is shorter than this cloud allows; "
            f"give at least {format_duration(floor)} (or turn it off)"
        )


def update(
    s: Session, who: Principal, key: str, req: model.InstanceUpdate, floor: int, request_id: str
) -> model.Instance:
    """Change the instance's schedule: only the fields ``req`` carries."""
    inst = instances.get(s, who, key)
    sent = req.model_fields_set
    if "snapshot_every" in sent:
        check_every(req.snapshot_every, floor)
        inst.snapshot_every = req.snapshot_every
    if "snapshot_keep" in sent and req.snapshot_keep is not None:
        inst.snapshot_keep = req.snapshot_keep
    every = format_duration(inst.snapshot_every) if inst.snapshot_every else "off"
    note = f"periodic snapshots: every {every}, keep {inst.snapshot_keep}"
    instance_log.log(s, inst.id, request_id, "update", who.name, note)
    s.flush()
    return instances.to_model(inst)


@dataclass
class Due:
    """What a pass of ``due`` did: orders placed (host, instance id), to wake, and
    images pruned to fit the quota, whose manifests go once this commits."""

    ordered: list[tuple[str, str]] = field(default_factory=list)
    pruned: list[model.Image] = field(default_factory=list)


def due(s: Session, now: datetime, registry_url: str) -> Due:
    """Order a periodic snapshot of each instance that is due and fits its project's
    ``snapshots`` quota (pruning its own older ones to fit)."""
    rows = s.scalars(
        select(m.Instance)
        .where(
            m.Instance.snapshot_every.is_not(None),
            m.Instance.deleted_at.is_(None),
            m.Instance.task_state.is_(None),
            m.Instance.vm_state.in_((VmState.active.value, VmState.stopped.value)),
        )
        .order_by(m.Instance.created_at)
        .with_for_update(of=m.Instance)
    ).unique()
    out = Due()
    for inst in list(rows):
        if inst.host is None or not hosts.is_up(inst.host) or not _is_due(s, inst, now):
            continue
        room = fit(s, inst)
        if room is None:
            continue
        out.pruned += room
        _order(s, inst, now, registry_url)
        out.ordered.append((inst.host.name, inst.id))
    return out


def fit(s: Session, inst: m.Instance) -> list[model.Image] | None:
    """Make room for one more snapshot under the project's quota: the instance's own
    periodic snapshots, failed ones first then the oldest, pruned (never its newest
    active one, nor one something needs); returns them. None when that is not
    enough: the skip and why go to its action log (once, not on every pass)."""
    project = s.scalar(
        select(m.Project).where(m.Project.id == inst.project_id).with_for_update()
    )  # as a manual snapshot's check: one of two concurrent snapshots waits
    limit = quotas.limits(s, inst.project_id).snapshots
    used = quotas.snapshot_count(s, inst.project_id)
    over = used + 1 - limit if limit is not None else 0
    if over <= 0:
        return []
    spare = _spare(s, inst)
    if len(spare) < over:
        _skipped(s, inst, project.name if project else inst.project_id, limit or 0, used)
        return None
    gone = []
    for row in spare[:over]:
        gone.append(catalog.image_model(row))
        catalog.delete_image(s, row.id)
        note = f"image {row.name} (to fit the snapshots quota of {limit})"
        instance_log.log(s, inst.id, WHO, "prune", WHO, note)
    return gone


def _spare(s: Session, inst: m.Instance) -> list[m.Image]:
    """The instance's periodic snapshots it could lose, in the order to lose them."""
    rows = _periodic(s, inst)[::-1]  # oldest first
    active = [r for r in rows if r.status == "active"]
    newest = active[-1].id if active else None
    kept = protected(s)
    spare = [r for r in rows if r.id != newest and r.id not in kept]
    return sorted(spare, key=lambda r: r.status == "active")  # failed ones first


def _skipped(s: Session, inst: m.Instance, project: str, limit: int, used: int) -> None:
    why = (
        f"periodic snapshot skipped: project {project}'s snapshots quota is {limit} and "
        f"{used} are in use; this instance's own older periodic snapshots cannot make "
        "room (its newest is kept). Delete snapshots (`dockyard image list`, `dockyard "
        f"image delete NAME`) or ask an admin to raise it (`dockyard quota set {project} "
        "--snapshots N`)"
    )
    last = s.scalar(
        select(m.InstanceAction)
        .where(m.InstanceAction.instance_id == inst.id)
        .order_by(m.InstanceAction.start_time.desc(), m.InstanceAction.id.desc())
        .limit(1)
    )
    if last is not None and last.action == SKIPPED and last.message == why:
        return  # said already; a later pass takes it once there is room
    instance_log.log(s, inst.id, WHO, SKIPPED, WHO)
    instance_log.close(s, inst.id, SKIPPED, why)
    log.info("periodic snapshot of %s skipped: snapshots quota %d full", inst.name, limit)


def _is_due(s: Session, inst: m.Instance, now: datetime) -> bool:
    since = inst.snapshot_last_at or inst.created_at
    if inst.snapshot_every is None or now - since < timedelta(seconds=inst.snapshot_every):
        return False
    if inst.vm_state != VmState.stopped.value or inst.snapshot_last_at is None:
        return True
    stopped = s.scalar(
        select(func.max(m.InstanceAction.start_time)).where(
            m.InstanceAction.instance_id == inst.id, m.InstanceAction.action == "stop"
        )
    )
    return stopped is not None and stopped > inst.snapshot_last_at


def _order(s: Session, inst: m.Instance, now: datetime, registry_url: str) -> None:
    name = _name(s, inst, now)
    row = snapshots.new_image(s, inst, name, registry_url)
    row.periodic = True
    inst.task_state = TaskState.snapshotting.value
    inst.snapshot_last_at = now
    instance_log.log(s, inst.id, WHO, snapshots.ACTION, WHO, f"image {name} (periodic)")
    hosts.bump(s, inst.host_id)
    log.info("periodic snapshot of %s: image %s", inst.name, name)


def _name(s: Session, inst: m.Instance, now: datetime) -> str:
    """NAME-auto-YYYYMMDDHHMM; image names are unique across projects, so a taken one
    gets the instance's id, then a random tail."""
    base = f"{inst.name[:_BASE].rstrip('-_.')}-auto-{now.strftime(_STAMP)}"
    for name in (base, f"{base}-{inst.id[:8]}"):
        if s.scalar(select(m.Image.id).where(m.Image.name == name)) is None:
            return name
    return f"{base}-{inst.id[:8]}-{m.new_id()[:4]}"


def prune(s: Session) -> list[model.Image]:
    """Delete the periodic snapshots each scheduled instance has beyond its K newest
    active ones (and failed ones a newer success replaced); returns them, for the
    caller to delete their manifests once this commits."""
    kept = protected(s)
    gone: list[model.Image] = []
    scheduled = s.scalars(
        select(m.Instance).where(
            m.Instance.snapshot_every.is_not(None), m.Instance.deleted_at.is_(None)
        )
    ).unique()
    for inst in list(scheduled):
        for row in _beyond(s, inst):
            if row.id in kept:
                log.info(
                    "periodic snapshot %s of %s is past its keep of %d but kept: an "
                    "instance runs from it or a move needs it",
                    row.name,
                    inst.name,
                    inst.snapshot_keep,
                )
                continue
            gone.append(catalog.image_model(row))
            catalog.delete_image(s, row.id)
            instance_log.log(s, inst.id, WHO, "prune", WHO, f"image {row.name}")
    return gone


def _beyond(s: Session, inst: m.Instance) -> list[m.Image]:
    rows = _periodic(s, inst)
    active = [r for r in rows if r.status == "active"]
    if not active:
        return []
    newest = active[0].created_at
    failed = [r for r in rows if r.status != "active" and r.created_at < newest]
    return active[inst.snapshot_keep :] + failed


def _periodic(s: Session, inst: m.Instance) -> list[m.Image]:
    """The instance's periodic snapshots, newest first, but those an agent is pushing."""
    return list(
        s.scalars(
            select(m.Image)
            .where(
                m.Image.snapshot_of == inst.id,
                m.Image.periodic.is_(True),
                m.Image.status != "queued",
            )
            .order_by(m.Image.created_at.desc(), m.Image.name.desc())
        )
    )


def protected(s: Session) -> set[str]:
    """Images a live instance runs, or a move in flight or kept evacuation data names."""
    running = s.scalars(select(m.Instance.image_id).where(m.Instance.deleted_at.is_(None)))
    moves = s.execute(
        select(m.Migration.rebuilt_from, m.Migration.source_image_id).where(
            or_(
                m.Migration.status.in_(_IN_FLIGHT),
                m.Migration.source_state == "kept",
            )
        )
    )
    named = {i for pair in moves for i in pair if i}
    return {i for i in running if i} | named
