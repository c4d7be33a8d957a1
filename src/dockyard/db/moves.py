"""Cold migrations: the claim on the target, the record, drains, and the listing.

    POST /instances/KEY/migrate ─► lock the hosts ─► place (never the source) ─►
        target cores claimed, Migration(snapshotting), snapshot image queued,
        task migrating; the source's claim stays until the move ends

What happens next (reports, the deadline checker, the desired states of the
source and the target) is db/move_steps.py; the state machine itself is the
pure migration/cold.py. While a migration is in flight the scheduler counts the
instance on both hosts (db/hosts.py, ``_in_flight``), so neither is overbooked.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.db import (
    catalog,
    fencing,
    groups,
    hosts,
    instance_log,
    instances,
    quotas,
    snapshots,
    volumes,
)
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict, DockyardError, NotFound, NoValidHost
from dockyard.migration.cold import IN_FLIGHT, Status, downtime
from dockyard.model import TaskState, VmState
from dockyard.model.migrations import DrainResult, Migration, MigrationInstance, Unplaced
from dockyard.scheduler import claim
from dockyard.scheduler.state import GroupSpec
from dockyard.scheduler.weighers import GROUP_WEIGHERS, RamWeigher

ACTION = "migrate"
AT_ONCE = 2  # migrations one host's drain runs at a time; the rest wait, queued
KIND = "migration"  # the table also holds evacuations (their own module's)
_LIVE = [s.value for s in IN_FLIGHT]


def start(
    s: Session,
    who: Principal,
    key: str,
    target: str | None,
    request_id: str,
    registry_url: str,
    weigh_multiplier: float = 1.0,
    flavor_key: str | None = None,
) -> tuple[Migration, list[str]]:
    """Claim a target and begin; returns the record and the hosts to wake. Runs in a
    writing session: the hosts are locked before the instance is read, so a second
    migrate of the same instance waits, then finds it migrating (409). With
    ``flavor_key`` (a resize that does not fit where it runs) the target is chosen and
    claimed for that flavor, which the instance takes once it runs there."""
    hosts.lock_for_claim(s)
    inst = instances.get(s, who, key)
    _check_movable(s, inst)
    flavor = catalog.flavor(s, flavor_key) if flavor_key else None
    shape = instances.shape_of(flavor or inst)
    if flavor is not None:
        needs = claim.quota_needs(shape, instances.shape_of(inst))
        quotas.check(s, inst.project_id, inst.project.name, needs)
    host_id, cores = _place(s, inst, target, weigh_multiplier, shape)
    mig, wake = _begin(s, who, inst, host_id, cores, request_id, registry_url, flavor)
    return mig, wake


def _check_movable(s: Session, inst: m.Instance) -> None:
    if inst.task_state is not None or inst.vm_state != VmState.active.value:
        raise Conflict(
            f"cannot migrate {inst.name} while it is {inst.task_state or inst.vm_state}; "
            "only an ACTIVE instance with no task running migrates"
        )
    assert inst.host is not None
    if not hosts.is_up(inst.host):
        raise Conflict(
            f"{inst.name}'s host {inst.host.name} is down, so it cannot stop and push it; "
            "evacuate the host instead"
        )
    for vol_id in _volume_ids(inst):
        row = s.get(m.Volume, vol_id)
        others = [i.name for i in volumes.using(s, row) if i.id != inst.id] if row else []
        if others:
            raise Conflict(
                f"volume {row.name if row else vol_id} is also mounted by {', '.join(others)}; "
                "its data can move with one instance only: detach it from the others first"
            )


def _volume_ids(inst: m.Instance) -> list[str]:
    return [str(v["volume_id"]) for v in inst.volumes if v.get("volume_id")]


def _place(
    s: Session, inst: m.Instance, target: str | None, weigh_multiplier: float, shape: claim.Shape
) -> tuple[str, list[int]]:
    """The target host's id and, for a pinned instance, its cores there."""
    view = hosts.claim_view(s)
    kept = fencing.keeping(s, inst.id)  # an old copy there would start instead
    candidates = {h: st for h, st in view.items() if h != inst.host_id and h not in kept}
    if target is not None:
        row = hosts.by_name(s, target)
        if row.id == inst.host_id:
            raise Conflict(
                f"{inst.name} already runs on {target}; name another host, or leave --host out"
            )
        if row.id in kept:
            raise Conflict(fencing.kept_copy_refusal(inst.name, target, kept[row.id]))
        candidates = {row.id: view[row.id]}
    request = claim.request(
        shape,
        inst.network.name,
        inst.availability_zone,
        volume_gb=sum(quotas.volume_gb_of(int(v.get("size_mb") or 0)) for v in _named(inst)),
        group=_group(s, inst),
    )
    weighers = (RamWeigher(weigh_multiplier), *GROUP_WEIGHERS)
    placement = claim.place_new(list(candidates.values()), request, weighers=weighers)
    if placement.host is None:
        raise NoValidHost(
            f"cannot migrate {inst.name}: " + placement.explain(request),
            rejected=placement.rejected,
            reasons=placement.reasons(request),
        )
    host_id = next(h for h, st in candidates.items() if st is placement.host)
    return host_id, placement.cores


def _named(inst: m.Instance) -> list[dict[str, Any]]:
    return [v for v in inst.volumes if v.get("volume_id")]


def _group(s: Session, inst: m.Instance) -> GroupSpec | None:
    """The instance's server group, its members counted where they run and where
    in-flight migrations take them (two moves into one anti-affinity group at once
    must not pick the same host)."""
    if inst.server_group_id is None:
        return None
    _, spec = groups.for_claim(s, inst.project_id, inst.server_group_id)
    moving = s.scalars(
        select(m.Migration)
        .join(m.Instance, m.Migration.instance_id == m.Instance.id)
        .where(m.Instance.server_group_id == inst.server_group_id, m.Migration.status.in_(_LIVE))
    ).unique()
    extra = Counter(r.target_host.name for r in moving if r.target_host is not None)
    members = Counter(spec.members) + extra
    return dataclasses.replace(spec, members=dict(members))


def _begin(
    s: Session,
    who: Principal,
    inst: m.Instance,
    target_id: str,
    cores: list[int],
    request_id: str,
    registry_url: str,
    flavor: m.Flavor | None = None,
    queued: bool = False,
) -> tuple[Migration, list[str]]:
    assert inst.host_id is not None and inst.host is not None
    row = m.Migration(
        instance_id=inst.id,
        kind=KIND,
        status=(Status.queued if queued else Status.snapshotting).value,
        source_host_id=inst.host_id,
        target_host_id=target_id,
        source_cores=[c.core for c in inst.cores if c.host_id == inst.host_id],
        user_name=who.name,
        flavor_id=flavor.id if flavor else None,
    )
    s.add(row)
    s.flush()
    for core in cores:
        s.add(m.CoreClaim(host_id=target_id, core=core, instance_id=inst.id))
    name = f"{inst.name[:40]}-migration-{row.id[:8]}"
    snapshots.new_image(s, inst, name, registry_url, image_id=row.id)
    inst.task_state = TaskState.migrating.value
    target = s.get(m.Host, target_id)
    assert target is not None
    note = f"{inst.host.name} -> {target.name} (migration {row.id})"
    if flavor is not None:
        note += f", then resize {inst.flavor.name} -> {flavor.name}"
    instance_log.log(s, inst.id, request_id, ACTION, who.name, note)
    hosts.bump(s, inst.host_id)
    s.flush()
    s.refresh(row)
    return to_model(row), [inst.host.name]


def drain(
    s: Session, who: Principal, name: str, request_id: str, registry_url: str, weigh: float = 1.0
) -> tuple[DrainResult, list[str]]:
    """Disable the host ("draining") and start a migration for each of its instances;
    those that fit nowhere (or cannot move now) stay, listed with why."""
    hosts.lock_for_claim(s)
    host = hosts.by_name(s, name)
    hosts.set_enabled(s, name, "draining")
    rows = s.scalars(
        select(m.Instance)
        .where(m.Instance.host_id == host.id, m.Instance.deleted_at.is_(None))
        .order_by(m.Instance.created_at)
    ).unique()
    started: list[Migration] = []
    unplaced: list[Unplaced] = []
    wake = {name}
    for inst in list(rows):
        try:
            _check_movable(s, inst)
            target, cores = _place(s, inst, None, weigh, instances.shape_of(inst))
        except DockyardError as exc:
            reasons = exc.extra.get("reasons", {}) if isinstance(exc, NoValidHost) else {}
            unplaced.append(Unplaced(instance=_ident(inst), reason=exc.detail, reasons=reasons))
            continue
        later = len(started) >= AT_ONCE  # queued: the checker begins it in its turn
        mig, hosts_ = _begin(s, who, inst, target, cores, request_id, registry_url, queued=later)
        started.append(mig)
        wake.update(hosts_)
    return DrainResult(host=name, migrations=started, unplaced=unplaced), sorted(wake)


def in_flight(s: Session, instance_id: str) -> m.Migration | None:
    """The instance's cold migration in flight, if any.

    Its id first: every report asks, nearly always of an instance that is not moving,
    and loading Migration rows sets up their eager joins even when none comes back."""
    found = s.scalar(
        select(m.Migration.id)
        .where(
            m.Migration.instance_id == instance_id,
            m.Migration.kind == KIND,
            m.Migration.status.in_(_LIVE),
        )
        .order_by(m.Migration.started_at.desc())
        .limit(1)
    )
    return None if found is None else s.get(m.Migration, found)


def list_migrations(
    s: Session, who: Principal, instance: str | None = None, host: str | None = None
) -> list[Migration]:
    q = select(m.Migration).join(m.Instance, m.Migration.instance_id == m.Instance.id)
    if not who.is_admin:
        q = q.where(m.Instance.project_id == who.project_id)
    if instance is not None:
        q = q.where(m.Migration.instance_id == _instance_id(s, who, instance))
    if host is not None:
        hid = hosts.by_name(s, host).id
        q = q.where((m.Migration.source_host_id == hid) | (m.Migration.target_host_id == hid))
    return [to_model(r) for r in s.scalars(q.order_by(m.Migration.started_at)).unique()]


def _instance_id(s: Session, who: Principal, key: str) -> str:
    """By live name or id; a deleted instance's id still finds its history."""
    row = s.get(m.Instance, key)
    if row is not None and (who.is_admin or row.project_id == who.project_id):
        return row.id
    return instances.get(s, who, key).id


def show(s: Session, who: Principal, migration_id: str) -> Migration:
    row = s.get(m.Migration, migration_id)
    if row is None or not (who.is_admin or row.instance.project_id == who.project_id):
        raise NotFound(f"migration {migration_id!r} does not exist; see `dockyard migration list`")
    return to_model(row)


def _ident(inst: m.Instance) -> MigrationInstance:
    return MigrationInstance(id=inst.id, name=inst.name)


def to_model(r: m.Migration) -> Migration:
    return Migration(
        id=r.id,
        instance=_ident(r.instance),
        kind=r.kind,
        status=r.status,
        source=r.source_host.name,
        target=r.target_host.name if r.target_host else None,
        source_state=r.source_state,
        user=r.user_name,
        started_at=r.started_at,
        stopped_at=r.stopped_at,
        resumed_at=r.resumed_at,
        finished_at=r.finished_at,
        downtime_s=downtime(r.stopped_at, r.resumed_at),
        seconds={k: float(v) for k, v in (r.seconds or {}).items()},
        snapshot_digest=r.snapshot_digest,
        reason=r.reason,
    )
