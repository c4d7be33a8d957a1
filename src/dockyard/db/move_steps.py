"""A migration after its claim: reports, the deadline checker, the hosts' desired states.

    source's desired  snapshotting: power stopped + SnapshotOrder(id=migration,
                      consistent, volumes); starting: the stopped copy, held
    source reports    snapshot done ─► move: host, cores, image -> the target
                      error         ─► roll back
    target's desired  starting: the instance from the snapshot's digest, its volumes'
                      data to restore (volume_sources), power running
    target reports    running ─► finish: the source's copy, claim and volume data go
                      error   ─► roll back: the instance runs on the source again
    checker (lease)   deadline passed, a host down ─► roll back

Each event goes through migration/cold.py's ``step``; an event the status does
not expect changes nothing.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import hosts, instance_log, instance_state, moves, registries, snapshots
from dockyard.db import models as m
from dockyard.migration import cold
from dockyard.migration.cold import Act, Event, Status
from dockyard.model import PowerState, TaskState, VmState
from dockyard.model.agent import SnapshotOrder, VolumeCopy

DEFAULT_TIMEOUT = timedelta(seconds=120)


def on_report(
    s: Session,
    host_name: str,
    instance_id: str,
    rep: model.InstanceReport,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> list[str] | None:
    """Take a report that belongs to a snapshot or a migration; returns the hosts to
    wake, or None when the report is not ours (instances.report takes it)."""
    inst = s.get(m.Instance, instance_id, options=instance_state.UNREAD)
    if inst is None:
        return None
    if inst.task_state == TaskState.snapshotting.value and _on(inst, host_name):
        snapshots.on_report(s, inst, rep)
        return [host_name]
    mig = moves.in_flight(s, instance_id)
    if mig is None:
        return None
    if not _moving(mig):
        _abandon(s, mig)
        return None  # a delete (or an admin's reset-state) took over: instances.report
    source, target = mig.source_host.name, mig.target_host.name if mig.target_host else None
    detail = rep.error or ""
    if host_name == source:
        event = _source_event(mig, inst, rep)
        image = s.get(m.Image, mig.id)
        if event == Event.snapshot_done and rep.snapshot is not None:
            if image is None:  # an admin deleted the queued image: nothing to start from
                event, detail = Event.snapshot_failed, "its image was deleted meanwhile"
            else:
                snapshots.activate(image, rep.snapshot)
    elif host_name == target:
        event = _target_event(mig, inst, rep)
    else:
        return None
    if event is None:
        return []
    return apply(s, mig, event, timeout, detail)


def _moving(mig: m.Migration) -> bool:
    return mig.instance.task_state == TaskState.migrating.value


def _abandon(s: Session, mig: m.Migration) -> None:
    """The instance was deleted (or reset by an admin) during the move: the migration
    ends, and the host it is not on gives back its claim; the instance stays where
    its host says, for that task to finish."""
    inst = mig.instance
    mig.status, mig.finished_at = Status.error.value, m.now()
    mig.reason = (
        f"abandoned: the instance became {inst.task_state or inst.vm_state} during the move"
    )
    for host_id in (mig.source_host_id, mig.target_host_id):
        if host_id is not None and host_id != inst.host_id:
            _drop_cores(s, inst.id, host_id)
            hosts.bump(s, host_id)  # its desired state no longer holds the instance
    image = s.get(m.Image, mig.id)
    if image is not None and image.status == "queued":
        s.delete(image)


def _on(inst: m.Instance, host_name: str) -> bool:
    return inst.host is not None and inst.host.name == host_name


def _source_event(mig: m.Migration, inst: m.Instance, rep: model.InstanceReport) -> Event | None:
    if mig.status != Status.snapshotting.value:
        return None  # the held copy: nothing it says changes the move
    inst.power_state = rep.power_state.value
    if rep.snapshot is not None and rep.snapshot.id == mig.id:
        _record_snapshot(mig, rep.snapshot)
        return Event.snapshot_done
    return Event.snapshot_failed if rep.error else None


def _target_event(mig: m.Migration, inst: m.Instance, rep: model.InstanceReport) -> Event | None:
    if mig.status != Status.starting.value:
        return None
    inst.power_state = rep.power_state.value
    if rep.error:
        return Event.target_failed
    return Event.target_active if rep.power_state == PowerState.running else None


def _record_snapshot(mig: m.Migration, done: model.SnapshotDone) -> None:
    now = m.now()
    mig.snapshot_digest = done.digest
    mig.volumes = {k: v.model_dump() for k, v in done.volumes.items()}
    mig.seconds = {k: round(v, 3) for k, v in done.seconds.items()}
    mig.stopped_at = cold.stopped_at(now, done.seconds)


def apply(
    s: Session, mig: m.Migration, event: Event, timeout: timedelta, detail: str = ""
) -> list[str]:
    """Fold ``event`` into the migration and carry out its act; the hosts to wake."""
    move = cold.step(Status(mig.status), event)
    if move.act == Act.nothing:
        return []
    inst = mig.instance
    mig.status = move.status.value
    if move.act == Act.begin:
        mig.started_at = m.now()  # the snapshot phase's clock
    elif move.act == Act.move:
        _move(s, mig, inst)
    elif move.act == Act.finish:
        _finish(s, mig, inst)
    else:
        target = mig.target_host.name if mig.target_host else "-"
        why = cold.reason(event, mig.source_host.name, target, timeout, detail)
        _roll_back(s, mig, inst, why)
    hosts.bump(s, mig.source_host_id)
    hosts.bump(s, mig.target_host_id)
    return sorted({mig.source_host.name, *([mig.target_host.name] if mig.target_host else [])})


def _move(s: Session, mig: m.Migration, inst: m.Instance) -> None:
    """The instance belongs to the target now (same IP, MAC, hostname, id); it starts
    there from the snapshot, which becomes its image."""
    image = s.get(m.Image, mig.id)
    if image is not None and image.status == "active":
        inst.image_id = image.id
    inst.host_id = mig.target_host_id
    inst.power_state = PowerState.nostate.value
    s.flush()
    s.expire(inst, ["host", "image"])


def _finish(s: Session, mig: m.Migration, inst: m.Instance) -> None:
    now = m.now()
    mig.resumed_at = mig.finished_at = now
    if mig.stopped_at is not None:
        start = (now - mig.stopped_at).total_seconds() - cold.after_stop(mig.seconds or {})
        mig.seconds = {**(mig.seconds or {}), "start": round(max(0.0, start), 3)}
    mig.source_state = "removed"  # the source's desired drops it: its agent removes it all
    _drop_cores(s, inst.id, mig.source_host_id)
    for vol_id in moves._volume_ids(inst):
        row = s.get(m.Volume, vol_id)
        if row is not None:
            row.host_id = mig.target_host_id
    if mig.flavor is not None:
        _take_flavor(s, inst, mig.flavor)
    inst.task_state, inst.vm_state, inst.fault = None, VmState.active.value, None
    instance_log.close(s, inst.id, moves.ACTION, None)


def _take_flavor(s: Session, inst: m.Instance, flavor: m.Flavor) -> None:
    """The resize the move was for, on the target that was claimed for it: the agent
    applies the new limits live (as after a resize in place)."""
    cores = s.scalars(
        select(m.CoreClaim.core).where(
            m.CoreClaim.instance_id == inst.id, m.CoreClaim.host_id == inst.host_id
        )
    ).all()
    figures = {f: getattr(flavor, f) for f in instance_state.FIGURES if f != "flavor_id"}
    figures["limits"] = instance_state.limits(flavor, inst.image)
    instance_state.set_figures(s, inst, {**figures, "flavor_id": flavor.id}, sorted(cores))


def _roll_back(s: Session, mig: m.Migration, inst: m.Instance, why: str) -> None:
    """Nothing stays on the target; the instance runs on the source again."""
    mig.reason, mig.finished_at = why, m.now()
    if mig.target_host_id is not None:
        _drop_cores(s, inst.id, mig.target_host_id)
    inst.host_id = mig.source_host_id
    image = s.get(m.Image, mig.id)
    if image is not None and image.status == "queued":
        s.delete(image)  # never pushed
    inst.task_state, inst.vm_state = None, VmState.active.value
    inst.fault = f"migration failed, running on {mig.source_host.name} again: {why}"[:1024]
    instance_log.close(s, inst.id, moves.ACTION, why)
    s.flush()
    s.expire(inst, ["host", "cores"])


def _drop_cores(s: Session, instance_id: str, host_id: str) -> None:
    s.execute(
        delete(m.CoreClaim).where(
            m.CoreClaim.instance_id == instance_id, m.CoreClaim.host_id == host_id
        )
    )


def enforce(s: Session, timeout: timedelta = DEFAULT_TIMEOUT) -> list[str]:
    """The checker's pass: deadlines and hosts gone down; returns the hosts to wake."""
    now, wake = m.now(), set[str]()
    q = select(m.Migration).where(
        m.Migration.kind == moves.KIND, m.Migration.status.in_([v.value for v in cold.IN_FLIGHT])
    )
    for mig in list(s.scalars(q).unique()):
        if not _moving(mig):
            _abandon(s, mig)
            wake.update(h.name for h in (mig.source_host, mig.target_host) if h is not None)
            continue
        status = Status(mig.status)
        event = cold.check(
            status,
            cold.since(status, mig.started_at, mig.stopped_at, mig.seconds),
            now,
            timeout,
            hosts.is_up(mig.source_host),
            mig.target_host is not None and hosts.is_up(mig.target_host),
        )
        if event is not None:
            wake.update(apply(s, mig, event, timeout))
    wake.update(_take_turns(s, timeout))
    return sorted(wake)


def _take_turns(s: Session, timeout: timedelta) -> list[str]:
    """Queued migrations begin, oldest first, while their source host moves fewer
    than moves.AT_ONCE instances (a drain queues the rest)."""
    q = select(m.Migration).where(
        m.Migration.kind == moves.KIND,
        m.Migration.status.in_([v.value for v in cold.IN_FLIGHT]),
    )
    rows = sorted(s.scalars(q).unique(), key=lambda r: r.started_at)
    busy = Counter(r.source_host_id for r in rows if r.status != Status.queued.value)
    wake: list[str] = []
    for mig in rows:
        if mig.status == Status.queued.value and busy[mig.source_host_id] < moves.AT_ONCE:
            busy[mig.source_host_id] += 1
            wake += apply(s, mig, Event.turn, timeout)
    return wake


def settle(s: Session, dead: m.Host) -> list[str]:
    """End now, as the checker would, the migrations in flight from or to ``dead`` (an
    evacuation settles them first: then each instance is where its host says, and is
    rebuilt from there or not at all). Returns the hosts to wake."""
    q = select(m.Migration).where(
        m.Migration.kind == moves.KIND,
        m.Migration.status.in_([v.value for v in cold.IN_FLIGHT]),
        (m.Migration.source_host_id == dead.id) | (m.Migration.target_host_id == dead.id),
    )
    wake: set[str] = set()
    for mig in list(s.scalars(q).unique()):
        if not _moving(mig):
            _abandon(s, mig)
            continue
        down = Event.source_down if mig.source_host_id == dead.id else Event.target_down
        wake.update(apply(s, mig, down, DEFAULT_TIMEOUT))
    s.flush()
    return sorted(wake)


# --- the hosts' desired states


def desired(s: Session, host_name: str, state: model.DesiredState) -> model.DesiredState:
    """``state`` (db/instances.py's) with the orders of snapshots and migrations."""
    host = hosts.by_name(s, host_name)
    wanted = {i.id: i for i in state.instances}
    # every desired-state read comes here and almost always finds nothing to add:
    # loading ORM rows sets up their eager joins even for none, so look cheaply first
    if any(i.task_state == TaskState.snapshotting for i in state.instances):
        for inst in _snapshotting(s, host.id):
            if inst.id in wanted:
                wanted[inst.id].snapshot = snapshots.order_for(s, inst)
                wanted[inst.id].power = snapshots.desired_power(inst)
    moving = (
        m.Migration.kind == moves.KIND,
        m.Migration.status.in_([v.value for v in cold.IN_FLIGHT]),
        (m.Migration.source_host_id == host.id) | (m.Migration.target_host_id == host.id),
    )
    if s.scalar(select(m.Migration.id).where(*moving).limit(1)) is None:
        return state
    for mig in s.scalars(select(m.Migration).where(*moving)).unique():
        if not _moving(mig):
            continue  # deleted during the move: the checker ends it
        if mig.source_host_id == host.id:
            _as_source(s, mig, state, wanted)
        else:
            _as_target(mig, state, wanted)
    return state


def _snapshotting(s: Session, host_id: str) -> list[m.Instance]:
    q = select(m.Instance).where(
        m.Instance.host_id == host_id,
        m.Instance.task_state == TaskState.snapshotting.value,
        m.Instance.deleted_at.is_(None),
    )
    return list(s.scalars(q).unique())


def _as_source(
    s: Session,
    mig: m.Migration,
    state: model.DesiredState,
    wanted: dict[str, model.DesiredInstance],
) -> None:
    """Stopped, with the snapshot order; after the move, held stopped (its container
    and data stay until the target runs the instance)."""
    inst = mig.instance
    if mig.status == Status.queued.value:
        return  # waiting for its turn: it runs as before
    want = wanted.get(inst.id)
    if want is None:  # moved: the target has it, this host keeps a stopped copy
        want = instance_state.desired(inst, hosts.shared_pool(s, mig.source_host_id))
        state.instances.append(want)
    want.power = "stopped"
    want.cpuset = _cpuset(inst, mig.source_host_id, want.cpuset)
    image = s.get(m.Image, mig.id)
    if mig.status == Status.snapshotting.value and image is not None:
        push = snapshots.push_ref(image)
        want.snapshot = SnapshotOrder(
            id=mig.id, push_ref=push, consistent=True, volumes=True, layer_on=_base(inst, image)
        )


def _base(inst: m.Instance, snapshot: m.Image) -> str | None:
    """The instance's image in the registry the snapshot goes to, if it is there: the
    source pushes one layer on top of it instead of committing (compute/snapshots.py)."""
    own = inst.image
    if own is None or own.registry_url != snapshot.registry_url:
        return None
    return next(iter(registries.pulls(None, own)), None)


def _as_target(
    mig: m.Migration, state: model.DesiredState, wanted: dict[str, model.DesiredInstance]
) -> None:
    """Running from the snapshot's digest, its volumes' data restored first."""
    want = wanted.get(mig.instance_id)
    if want is None:
        return  # not moved yet: nothing to do here
    want.cpuset = _cpuset(mig.instance, mig.target_host_id, want.cpuset)
    want.volume_sources = {k: VolumeCopy.model_validate(v) for k, v in (mig.volumes or {}).items()}
    have = {v.id for v in state.volumes or []}
    for v in moves._named(mig.instance):
        if v["volume_id"] not in have and state.volumes is not None:
            state.volumes.append(model.HostVolume(id=v["volume_id"], size_mb=v["size_mb"]))


def _cpuset(inst: m.Instance, host_id: str | None, given: list[int]) -> list[int]:
    """A pinned instance's cores on ``host_id`` (it holds cores on both while moving)."""
    if not inst.dedicated:
        return given
    return [c.core for c in inst.cores if c.host_id == host_id]
