"""Evacuation: rebuild a dead host's instances on other hosts, identity unchanged.

    POST /hosts/NAME/evacuate ──► refused (409) while NAME is up
        │ under the claim lock, for each live instance on NAME, oldest first:
        │   scheduler: same filters as a create (its AZ, its server group, room),
        │              never NAME; no host: listed as unplaced, with why
        │   the instance: host, cores and image (its newest active snapshot, or its
        │              own) change; id, IP, MAC, hostname, ssh keys, limits do not
        │   named volumes: re-pinned to the target, where they start empty; their
        │              data stays on NAME (recoverable, then released)
        │   a migrations row (kind evacuation, status starting, source_state kept)
        │   and an "evacuate" action saying what the rebuild loses
        ▼
    target's agent spawns it ──► db/fencing.rebuilt(): finished (or error)
    NAME's agent, once back ──► fenced (db/fencing.py)

The whole evacuation is one transaction: every instance placed or none recorded.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import fencing, groups, hosts, instances, move_steps
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict
from dockyard.model import PowerState, TaskState, VmState
from dockyard.scheduler import claim
from dockyard.scheduler.state import GroupSpec, Placement
from dockyard.scheduler.weighers import GROUP_WEIGHERS, RamWeigher

_RECOVER = "`dockyard server recover {name} --host {host} --path PATH --to DIR`"


def evacuate(
    s: Session, who: Principal, host_name: str, request_id: str
) -> tuple[model.EvacuationResult, set[str]]:
    """Rebuild every live instance of the down host ``host_name`` elsewhere. Returns
    what was placed (and what fits nowhere, with why) and the hosts to wake."""
    dead = hosts.by_name(s, host_name)
    if hosts.is_up(dead):
        raise Conflict(
            f"host {host_name} is up (it sent a heartbeat less than the server's "
            "--host-down-after ago); evacuate only a dead host: power it off (or stop its "
            "dockerd and its agent) and wait until `dockyard host show` says down, or move "
            "instances off a live host with migration. An instance still running there "
            "would answer on its IP from two hosts"
        )
    hosts.lock_for_claim(s)
    settled = move_steps.settle(s, dead)  # migrations from or to it end first
    rows = s.scalars(
        select(m.Instance)
        .where(m.Instance.host_id == dead.id, m.Instance.deleted_at.is_(None))
        .order_by(m.Instance.created_at)
    ).unique()
    done: list[model.Evacuation] = []
    unplaced: list[model.Unplaced] = []
    wake = {dead.name, *settled}
    for inst in list(rows):
        if inst.task_state == TaskState.deleting.value:
            why = f"being deleted; {host_name} finishes that when it returns"
            unplaced.append(model.Unplaced(instance=inst.name, reason=why))
            continue
        moved = _move(s, who, inst, dead, request_id)
        if isinstance(moved, str):
            unplaced.append(model.Unplaced(instance=inst.name, reason=moved))
            continue
        s.flush()
        done.append(fencing.to_model(s, moved))
        wake.add(moved.target_host.name if moved.target_host else host_name)
    hosts.bump(s, dead.id)
    return model.EvacuationResult(host=host_name, evacuations=done, unplaced=unplaced), wake


def _move(
    s: Session, who: Principal, inst: m.Instance, dead: m.Host, request_id: str
) -> m.Migration | str:
    """Claim a new host for ``inst`` and point it there; the reason if none fits."""
    view = hosts.claim_view(s)
    view.pop(dead.id, None)
    for kept in fencing.keeping(s, inst.id):  # an old copy there would start instead
        view.pop(kept, None)
    vols = _volumes(s, inst)
    request = claim.request(
        instances.shape_of(inst),
        inst.network.name,
        inst.availability_zone,
        _volume_host(vols, dead),
        sum((v.size_mb + 1023) // 1024 for v in vols if v.host_id == dead.id),
        _group(s, inst, dead),
    )
    weighers = (RamWeigher(1.0), *GROUP_WEIGHERS)
    placement = claim.place_new(list(view.values()), request, weighers=weighers)
    if placement.host is None:
        return placement.explain(request)
    target = next(h for h, st in view.items() if st is placement.host)
    return _rebuild(s, who, inst, dead, target, placement, vols, request_id)


def _rebuild(
    s: Session,
    who: Principal,
    inst: m.Instance,
    dead: m.Host,
    target_id: str,
    placement: Placement,
    vols: list[m.Volume],
    request_id: str,
) -> m.Migration:
    """Record the evacuation, then point the instance (cores, volumes, image, states)
    at the target, where its agent spawns it."""
    snap = latest_snapshot(s, inst.id)
    image = snap or inst.image
    target = s.get(m.Host, target_id)
    assert target is not None
    emptied = [v for v in vols if v.host_id == dead.id]
    note = _note(inst, dead, target, image, snap is not None, emptied)[:1024]
    row = m.Migration(
        instance_id=inst.id,
        kind=fencing.KIND,
        status="starting",
        source_host_id=dead.id,
        target_host_id=target_id,
        source_cores=[c.core for c in inst.cores],
        source_state="kept",
        snapshot_digest=snap.digest if snap else None,
        volumes={v.id: {"name": v.name, "data": f"kept on {dead.name}"} for v in vols},
        user_name=who.name,
        rebuilt_from=image.id,
        source_image_id=inst.image_id,
        note=note,
    )
    s.add(row)
    action = m.InstanceAction(
        instance_id=inst.id, request_id=request_id, action="evacuate", user_name=who.name
    )
    s.add(action)
    action.message = note
    _repoint(s, inst, target_id, placement.cores, emptied, image)
    return row


def _repoint(
    s: Session,
    inst: m.Instance,
    target_id: str,
    cores: list[int],
    emptied: list[m.Volume],
    image: m.Image,
) -> None:
    s.execute(delete(m.CoreClaim).where(m.CoreClaim.instance_id == inst.id))
    s.flush()
    for core in cores:
        s.add(m.CoreClaim(host_id=target_id, core=core, instance_id=inst.id))
    for vol in emptied:
        vol.host_id = target_id  # an empty volume there; the data stays on the dead host
    inst.host_id, inst.image_id, inst.fault = target_id, image.id, None
    inst.vm_state, inst.task_state = VmState.building.value, TaskState.spawning.value
    inst.power_state = PowerState.nostate.value
    hosts.bump(s, target_id)
    s.flush()
    s.expire(inst, ["cores", "host", "image"])


def _note(
    inst: m.Instance,
    dead: m.Host,
    target: m.Host,
    image: m.Image,
    from_snapshot: bool,
    vols: list[m.Volume],
) -> str:
    """What the rebuild loses, in the words the action log and the record show."""
    since = f"snapshot {image.name} ({image.created_at:%Y-%m-%d %H:%M} UTC)"
    what = f"since {since}" if from_snapshot else f"since it was created (image {image.name})"
    text = (
        f"{dead.name} is down: rebuilt on {target.name} from its "
        f"{since if from_snapshot else f'image {image.name}, no snapshot'}; root filesystem "
        f"changes {what} are lost unless recovered with "
        + _RECOVER.format(name=inst.name, host=dead.name)
    )
    if vols:
        names = ", ".join(sorted(v.name for v in vols))
        text += (
            f"; named volumes {names} start empty on {target.name}: their data stays on "
            f"{dead.name} (recover it the same way)"
        )
    return text


def latest_snapshot(s: Session, instance_id: str) -> m.Image | None:
    """The newest active snapshot image committed from the instance."""
    return s.scalar(
        select(m.Image)
        .where(m.Image.snapshot_of == instance_id, m.Image.status == "active")
        .order_by(m.Image.created_at.desc())
        .limit(1)
    )


def _volumes(s: Session, inst: m.Instance) -> list[m.Volume]:
    ids = sorted({v["volume_id"] for v in inst.volumes if v.get("volume_id")})
    if not ids:
        return []
    return list(s.scalars(select(m.Volume).where(m.Volume.id.in_(ids))).unique())


def _volume_host(vols: list[m.Volume], dead: m.Host) -> str | None:
    """Where the instance must go: a volume it shares with an instance evacuated
    earlier in this run is already re-pinned to that one's target."""
    return next((v.host.name for v in vols if v.host and v.host_id != dead.id), None)


def _group(s: Session, inst: m.Instance, dead: m.Host) -> GroupSpec | None:
    """The instance's server group, its members on the dead host not counted: they
    are all being rebuilt elsewhere (an affinity group follows its first one)."""
    if inst.server_group_id is None:
        return None
    _, spec = groups.for_claim(s, inst.project_id, inst.server_group_id)
    members = {h: n for h, n in spec.members.items() if h != dead.name}
    return dataclasses.replace(spec, members=members)
