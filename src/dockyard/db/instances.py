"""Instances: the claim (host, IP, cores in one transaction), actions, agent reports."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.orm.interfaces import ORMOption

from dockyard import model, states
from dockyard.db import (
    catalog,
    drift,
    fencing,
    groups,
    hosts,
    instance_log,
    instance_state,
    lookup,
    quotas,
    registries,
    volumes,
)
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict, Gone, NotFound, NoValidHost
from dockyard.model import PowerState, TaskState, VmState
from dockyard.network import hostname, ipam
from dockyard.scheduler import claim
from dockyard.scheduler.state import HostState
from dockyard.scheduler.weighers import GROUP_WEIGHERS, RamWeigher

ACTION_OF_TASK = {
    TaskState.spawning: "create",
    TaskState.powering_on: "start",
    TaskState.powering_off: "stop",
    TaskState.rebooting: "reboot",
    TaskState.deleting: "delete",
    TaskState.resizing: "resize",
    TaskState.rebuilding: "rebuild",
}


def create(
    s: Session,
    who: Principal,
    req: model.InstanceCreate,
    request_id: str,
    weigh_multiplier: float = 1.0,
) -> tuple[model.Instance, str]:
    """Schedule and claim. Returns the instance and the host whose agent to wake.

    Runs inside a writing session: SQLite holds its write lock from the first
    statement; PostgreSQL locks every host row first, so two claims never see
    the same free cores or addresses. Unique keys on (subnet, address) and
    (host, core) are the backstop.
    """
    assert who.project_id is not None
    flavor, image = catalog.flavor(s, req.flavor), catalog.image(s, req.image, who)
    network = catalog.network(s, req.network)
    if image.status != "active":
        raise Conflict(f"image {image.name!r} is {image.status}; upload its rootfs first")
    _name_free(s, who.project_id, req.name)
    shape = shape_of(flavor)
    # held to the end: the session's identity map keeps rows weakly, and to_model reads it
    project = s.get(m.Project, who.project_id)
    name = project.name if project else who.project_id
    view = _room(s, who.project_id, name, claim.quota_needs(shape))
    vols, volume_host = volumes.resolve(s, who.project_id, req.volumes)
    unplaced = {v.id: v for v in vols if v.host_id is None}  # one volume, two paths: once
    new_gb = sum(quotas.volume_gb_of(v.size_mb) for v in unplaced.values())
    # read under the claim lock: where the group's members run cannot change under us
    group, spec = groups.for_claim(s, who.project_id, req.group) if req.group else (None, None)
    request = claim.request(shape, network.name, req.availability_zone, volume_host, new_gb, spec)
    weighers = (RamWeigher(weigh_multiplier), *GROUP_WEIGHERS)
    placement = claim.place_new(list(view.values()), request, weighers=weighers)
    if placement.host is None:
        raise NoValidHost(
            placement.explain(request),
            rejected=placement.rejected,
            reasons=placement.reasons(request),
        )
    host_id = next(h for h, st in view.items() if st is placement.host)
    volumes.pin(vols, host_id)
    subnet, ip = _claim_ip(s, network, req.ip)
    inst = m.Instance(
        name=req.name,
        project_id=who.project_id,
        user_id=who.user_id,
        flavor_id=flavor.id,
        image_id=image.id,
        network_id=network.id,
        subnet_id=subnet.id,
        host_id=host_id,
        availability_zone=placement.host.availability_zone,
        server_group_id=group.id if group else None,
        ip=ip,
        mac=ipam.mac_for(ip),
        hostname=hostname.render(subnet.hostname_rule, ip, req.name),
        vcpus=flavor.vcpus,
        memory_mb=flavor.memory_mb,
        disk_gb=flavor.disk_gb,
        dedicated=flavor.dedicated,
        pids_limit=flavor.pids_limit,
        limits=instance_state.limits(flavor, image),
        volumes=volumes.attachments(req.volumes, vols),
        ssh_keys=list(req.ssh_keys),
        key_processes=list(image.key_processes),
        snapshot_every=req.snapshot_every,
        snapshot_keep=req.snapshot_keep,
        env=dict(req.env),
        files=[f.model_dump() for f in req.files],
        health_check=req.health_check.model_dump() if req.health_check else None,
        vm_state=VmState.building.value,
        task_state=TaskState.spawning.value,
    )
    s.add(inst)
    s.flush()
    s.add(m.IpAllocation(subnet_id=subnet.id, address=ip, instance_id=inst.id))
    for core in placement.cores:
        s.add(m.CoreClaim(host_id=host_id, core=core, instance_id=inst.id))
    instance_log.log(s, inst.id, request_id, "create", who.name)
    hosts.bump(s, host_id)
    s.flush()
    return to_model(inst), placement.host.name


def _room(
    s: Session, project_id: str, project: str, needs: dict[str, int], only: str | None = None
) -> dict[str, HostState]:
    """The claim's first half, for creates and resizes alike: lock the hosts (before
    counting usage, or two claims both fit the quota), check the project's quota for
    ``needs``, and return the hosts (or the one with id ``only``) by id, as the
    scheduler sees them under that lock."""
    hosts.lock_for_claim(s)
    quotas.check(s, project_id, project, needs)
    return hosts.claim_view(s, only)


def shape_of(row: m.Flavor | m.Instance) -> claim.Shape:
    return claim.Shape(row.vcpus, row.memory_mb, row.disk_gb, row.dedicated)


def _name_free(s: Session, project_id: str, name: str) -> None:
    clash = s.scalar(
        select(m.Instance.id).where(
            m.Instance.project_id == project_id,
            m.Instance.name == name,
            m.Instance.deleted_at.is_(None),
        )
    )
    if clash:
        raise Conflict(f"an instance named {name!r} already exists in this project; choose another")


def _claim_ip(s: Session, network: m.Network, wanted: str | None) -> tuple[m.Subnet, str]:
    for subnet in network.subnets:
        spec = catalog.subnet_spec(subnet)
        taken = set(
            s.scalars(select(m.IpAllocation.address).where(m.IpAllocation.subnet_id == subnet.id))
        )
        if wanted is not None:
            if _contains(spec, wanted):
                return subnet, ipam.check_requested(spec, wanted, taken)
            continue
        ip = ipam.choose(spec, taken)
        if ip is not None:
            return subnet, ip
    if wanted is not None:
        cidrs = ", ".join(sn.cidr for sn in network.subnets)
        raise Conflict(
            f"{wanted} is outside network {network.name!r} ({cidrs}); pick an address inside"
        )
    raise Conflict(f"network {network.name!r} has no free addresses; add a subnet or free some")


def _contains(spec: model.SubnetCreate, ip: str) -> bool:
    try:
        return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(spec.cidr)
    except ValueError:
        return True  # let check_requested say what is wrong with it


def get(s: Session, who: Principal, key: str, options: Sequence[ORMOption] = ()) -> m.Instance:
    """By id or name; another project's instance is simply not found."""
    q = select(m.Instance).where(
        m.Instance.deleted_at.is_(None), (m.Instance.id == key) | (m.Instance.name == key)
    )
    if options:
        q = q.options(*options)
    if not who.is_admin:
        q = q.where(m.Instance.project_id == who.project_id)
    return lookup.one(s.scalars(q).unique().all(), "instance", key, "dockyard server list")


Stamp = tuple[datetime, datetime | None, bool]


def watched(s: Session, who: Principal, key: str) -> tuple[model.Instance, Stamp]:
    """The instance for a watch, and its stamp: as ``get``, but an id the caller's
    project deleted is Gone (410), so a waiter learns it ended; another project's stays
    NotFound."""
    row = s.get(m.Instance, key, options=instance_state.UNREAD)
    if row is not None and (who.is_admin or row.project_id == who.project_id):
        if row.deleted_at is not None:
            raise Gone(f"instance {row.name} ({key}) was deleted")
        if not _named_by_another(s, who, row):
            stamp = _stamp_of(row)  # before the model: a host going down in between
            return to_model(row), stamp  # shows in the next stamp (by id: one read)
    inst = get(s, who, key)
    stamp = _stamp_of(inst)
    return to_model(inst), stamp


def stamp(s: Session, instance_id: str) -> Stamp | None:
    """What changes whenever the watched instance's row does or its host goes up or
    down, in one narrow query: its last update, its deletion, its host being up (a
    state computed from time, which no change to a row announces). None: no such row."""
    found = s.execute(
        select(m.Instance.updated_at, m.Instance.deleted_at, m.Host.last_heartbeat)
        .outerjoin(m.Host, m.Instance.host_id == m.Host.id)
        .where(m.Instance.id == instance_id)
    ).one_or_none()
    if found is None:
        return None
    updated, deleted, beat = found
    return updated, deleted, beat is not None and hosts.beat_is_fresh(beat, s)


def _stamp_of(row: m.Instance) -> Stamp:
    return row.updated_at, row.deleted_at, row.host is not None and hosts.is_up(row.host)


def _named_by_another(s: Session, who: Principal, row: m.Instance) -> bool:
    """Another visible live instance is named like ``row``'s id (``get`` then refuses
    the key as ambiguous): one narrow query instead of get's second full read."""
    clash = select(m.Instance.id).where(
        m.Instance.deleted_at.is_(None), m.Instance.name == row.id, m.Instance.id != row.id
    )
    if not who.is_admin:
        clash = clash.where(m.Instance.project_id == who.project_id)
    return s.scalar(clash.limit(1)) is not None


def list_instances(s: Session, who: Principal) -> list[model.Instance]:
    q = (
        select(m.Instance)
        .where(m.Instance.deleted_at.is_(None))
        .order_by(m.Instance.created_at)
        .options(*instance_state.UNREAD)
    )
    if not who.is_admin:
        q = q.where(m.Instance.project_id == who.project_id)
    return [to_model(r) for r in s.scalars(q).unique()]


def act(
    s: Session, who: Principal, key: str, action: str, request_id: str
) -> tuple[model.Instance, str | None]:
    """Start, stop, reboot or delete. Returns the instance and the host to wake.

    Under the claim lock, as migrations, snapshots and evacuations are: on PostgreSQL
    two tasks begun at once on one instance would otherwise both pass the check."""
    hosts.lock_for_claim(s)
    inst = get(s, who, key)
    task = states.begin(action, VmState(inst.vm_state), instance_state.task_of(inst))
    instance_log.log(s, inst.id, request_id, action, who.name)
    if task == TaskState.deleting and inst.host_id is None:
        _finish_delete(s, inst)  # never placed, or released after a failed spawn
        instance_log.close(s, inst.id, "delete", None)
        return to_model(inst), None
    inst.task_state = task.value
    if task == TaskState.rebooting:
        inst.reboot_seq += 1
    hosts.bump(s, inst.host_id)
    return to_model(inst), inst.host.name if inst.host else None


def report(s: Session, host_name: str, instance_id: str, rep: model.InstanceReport) -> None:
    if rep.fenced:  # from the host an evacuation left: the instance lives elsewhere now
        fencing.fenced_report(s, host_name, instance_id)
        return
    inst = s.get(m.Instance, instance_id)
    if inst is None or inst.host is None or inst.host.name != host_name:
        raise NotFound(f"instance {instance_id} is not placed on host {host_name}")
    rep = instance_state.fold_report(inst, rep)
    out = states.on_report(VmState(inst.vm_state), instance_state.task_of(inst), rep)
    before = (inst.vm_state, inst.task_state, inst.power_state)
    inst.vm_state, inst.power_state = out.vm_state.value, out.power_state.value
    inst.task_state = out.task_state.value if out.task_state else None
    if out.finished is not None:
        instance_log.close(s, inst.id, ACTION_OF_TASK[out.finished], out.error)
    if out.vm_state == VmState.deleted:
        _finish_delete(s, inst)
    elif fencing.rebuilt(s, inst, out):  # an evacuation's rebuild: it keeps its IP either way
        pass
    elif out.error and out.finished == TaskState.spawning:
        inst.fault = f"spawn on {host_name} failed: {out.error} (its IP {inst.ip} was released)"
        _release(s, inst)
    elif out.error:
        inst.fault = f"{ACTION_OF_TASK[out.finished or TaskState.spawning]} failed: {out.error}"
        if out.finished == TaskState.resizing:
            _rollback_resize(s, inst)
            inst.fault += " (the old flavor is back)"
        if out.finished == TaskState.rebuilding:
            instance_state.rollback_rebuild(inst)
            inst.fault += " (its previous image and settings are back)"
    elif out.finished is not None:
        inst.fault = None
        inst.old_flavor = inst.rebuild_from = None
        if out.finished == TaskState.rebuilding:
            instance_state.rebuild_done(inst)
    if (inst.vm_state, inst.task_state, inst.power_state) != before:
        hosts.bump(s, inst.host_id)  # the agent's copy of this instance is now stale


def resize(
    s: Session, who: Principal, key: str, flavor_key: str, request_id: str
) -> tuple[model.Instance, str | None]:
    """Re-claim an ACTIVE instance on its own host with another flavor, live.

    The host is judged as if the instance were not on it, by the same filters
    as a create. When the new flavor does not fit there the answer is 409:
    moving it elsewhere needs migration. Runs in a writing session.
    """
    hosts.lock_for_claim(s)  # before the task check, as every task's begin
    inst = get(s, who, key)
    flavor = catalog.flavor(s, flavor_key)
    if flavor.id == inst.flavor_id:
        raise Conflict(f"{inst.name} already has flavor {flavor.name}; pick another")
    task = states.begin("resize", VmState(inst.vm_state), instance_state.task_of(inst))
    assert inst.host is not None
    old, new = shape_of(inst), shape_of(flavor)
    assert inst.host_id is not None
    needs = claim.quota_needs(new, old)
    state = _room(s, inst.project_id, inst.project.name, needs, only=inst.host_id)[inst.host_id]
    own = [c.core for c in inst.cores]
    request = claim.request(new, inst.network.name)
    placement = claim.place_resize(state, old, own, request)
    if placement.host is None:
        raise NoValidHost(
            f"flavor {flavor.name} does not fit on {state.name}, where {inst.name} runs: "
            + placement.explain(request).split(": ", 1)[1]
            + "; an admin can move it to a host where it fits: resize --allow-migrate",
            rejected=placement.rejected,
        )
    note = f"{inst.flavor.name} -> {flavor.name}"
    inst.old_flavor = {**{f: getattr(inst, f) for f in instance_state.FIGURES}, "cores": own}
    figures = {f: getattr(flavor, f) for f in instance_state.FIGURES if f != "flavor_id"}
    figures["limits"] = instance_state.limits(flavor, inst.image)
    instance_state.set_figures(s, inst, {**figures, "flavor_id": flavor.id}, placement.cores)
    inst.task_state = task.value
    instance_log.log(s, inst.id, request_id, "resize", who.name, note)
    hosts.bump(s, inst.host_id)
    return to_model(inst), state.name


def _rollback_resize(s: Session, inst: m.Instance) -> None:
    old = dict(inst.old_flavor or {})
    cores = old.pop("cores", [])
    if old:
        instance_state.set_figures(s, inst, old, cores)
    inst.old_flavor = None


def _release(s: Session, inst: m.Instance) -> None:
    s.execute(delete(m.IpAllocation).where(m.IpAllocation.instance_id == inst.id))
    s.execute(delete(m.CoreClaim).where(m.CoreClaim.instance_id == inst.id))
    hosts.bump(s, inst.host_id)
    inst.host_id, inst.ip, inst.mac = None, None, None


def _finish_delete(s: Session, inst: m.Instance) -> None:
    _release(s, inst)
    inst.vm_state, inst.task_state = VmState.deleted.value, None
    inst.power_state = PowerState.nostate.value
    inst.deleted_at = m.now()


def actions(s: Session, who: Principal, key: str) -> list[model.InstanceAction]:
    inst = get(s, who, key)
    rows = s.scalars(
        select(m.InstanceAction)
        .where(m.InstanceAction.instance_id == inst.id)
        .order_by(m.InstanceAction.start_time)
    )
    return [
        model.InstanceAction(
            request_id=r.request_id,
            action=r.action,
            user=r.user_name,
            start_time=r.start_time,
            finish_time=r.finish_time,
            result=r.result,
            message=r.message,
        )
        for r in rows
    ]


def record_events(
    s: Session, host_name: str, instance_id: str, events: list[model.InstanceEvent]
) -> None:
    inst = s.get(m.Instance, instance_id)
    if inst is None or inst.host is None or inst.host.name != host_name:
        raise NotFound(f"instance {instance_id} is not placed on host {host_name}")
    for ev in events:
        s.add(
            m.InstanceEvent(
                instance_id=instance_id,
                time=ev.time.replace(tzinfo=None),
                kind=ev.kind.value,
                message=ev.message,
            )
        )


def show(s: Session, who: Principal, key: str) -> model.InstanceDetail:
    """The instance by id or name, with its recent events and drift (``detail``)."""
    return detail(s, get(s, who, key, instance_state.UNREAD))


def detail(s: Session, inst: m.Instance, limit: int = 20) -> model.InstanceDetail:
    rows = s.scalars(
        select(m.InstanceEvent)
        .where(m.InstanceEvent.instance_id == inst.id)
        .order_by(m.InstanceEvent.time.desc())
        .limit(limit)
    )
    events = [
        model.InstanceEvent(time=e.time, kind=model.EventKind(e.kind), message=e.message)
        for e in rows
    ]
    found = drift.instance_drift(s, inst.host_id, inst.id)
    # the wire form's fields were checked as it was made: not a second time
    return model.InstanceDetail.model_construct(**dict(to_model(inst)), events=events, drift=found)


def to_model(r: m.Instance) -> model.Instance:
    vm, task = VmState(r.vm_state), instance_state.task_of(r)
    return model.Instance(
        id=r.id,
        name=r.name,
        project=r.project.name,
        hostname=r.hostname,
        status=states.status(vm, task),
        vm_state=vm,
        task_state=task,
        power_state=_power_seen(r),
        host=r.host.name if r.host else None,
        availability_zone=r.availability_zone,
        group=r.server_group.name if r.server_group else None,
        ip=r.ip,
        mac=r.mac,
        network=r.network.name,
        flavor=r.flavor.name,
        vcpus=r.vcpus,
        memory_mb=r.memory_mb,
        disk_gb=r.disk_gb,
        image=r.image.name,
        volumes=[_public(v) for v in r.volumes],
        ssh_keys=r.ssh_keys,
        key_processes=r.key_processes,
        fault=r.fault,
        snapshot_every=r.snapshot_every,
        snapshot_keep=r.snapshot_keep,
        last_snapshot_at=r.snapshot_last_at,
        env=r.env,
        files=[f["path"] for f in r.files],
        health_check=instance_state.health_check(r),
        health=_health_seen(r),
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _health_seen(r: m.Instance) -> model.Health | None:
    """Its check's last result while that says something about it: running, on an up
    host, not being made anew or moved."""
    moving = (TaskState.spawning, TaskState.rebuilding, TaskState.migrating)
    if not r.health or _power_seen(r) != PowerState.running or instance_state.task_of(r) in moving:
        return None
    return model.Health.model_construct(**r.health)


def _power_seen(r: m.Instance) -> PowerState:
    """What users see: the last power state the agent reported, or unknown while its
    host is down (computed when read; the stored state is what the host last said)."""
    if r.host is not None and not hosts.is_up(r.host):
        return PowerState.unknown
    return PowerState(r.power_state)


def desired_for_host(s: Session, host_name: str) -> model.DesiredState:
    host = hosts.by_name(s, host_name)
    # without the joins instance_state.desired does not read (flavor, host, group): a
    # host's state is rebuilt for every instance on it whenever one of them changes
    unused = (m.Instance.flavor, m.Instance.host, m.Instance.server_group)
    rows = s.scalars(
        select(m.Instance)
        .where(m.Instance.host_id == host.id, m.Instance.deleted_at.is_(None))
        .options(*(lazyload(r) for r in unused))
    ).unique()
    pool = hosts.shared_pool(s, host.id)
    fenced, kept = fencing.fenced_for_host(s, host, lambda r: instance_state.desired(r, pool))
    listed = volumes.for_host(s, host.id)
    state = model.DesiredState(
        generation=host.generation,
        instances=[instance_state.desired(r, pool) for r in rows] + fenced,
        volumes=listed + [v for v in kept if v.id not in {x.id for x in listed}],
    )
    return registries.with_pulls(s, host.availability_zone, state)


def _public(mount: dict[str, Any]) -> model.VolumeSpec:
    """A stored mount as users see it (without the agent's volume id and size); not
    re-validated, so a mount stored before today's path rules still lists."""
    public = {k: v for k, v in mount.items() if k not in ("volume_id", "size_mb")}
    return model.VolumeSpec.model_construct(**public)
