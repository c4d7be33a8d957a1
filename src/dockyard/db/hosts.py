"""Hosts: registration, heartbeats, and the usage the scheduler sees."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Text, cast, func, select, update
from sqlalchemy.orm import Session, object_session

from dockyard import model
from dockyard.db import models as m
from dockyard.db.session import HOST_DOWN_AFTER
from dockyard.errors import Forbidden, NotFound
from dockyard.migration.cold import IN_FLIGHT
from dockyard.scheduler.state import HostState

T = TypeVar("T")
log = logging.getLogger(__name__)
# the address the host's agent registered from (the server's word, never the agent's:
# a label of that name in a registration is dropped); its /metrics is scraped there
ADDRESS_LABEL = "dockyard.address"


def register(s: Session, req: model.HostRegister, address: str = "") -> model.Host:
    """Create or refresh the host row; an agent restart keeps its claims.

    The agent's availability zone counts at the first registration only: after
    that the zone is the admin's (``PATCH /hosts/NAME``), whatever the agent says.
    ``address``: the one it called from, kept as its ADDRESS_LABEL.
    """
    row = s.scalar(select(m.Host).where(m.Host.name == req.name))
    if row is None:
        row = m.Host(name=req.name, availability_zone=req.availability_zone)
        s.add(row)
    row.cores, row.memory_mb, row.disk_gb = req.cores, req.memory_mb, req.disk_gb
    labels = {k: v for k, v in req.labels.items() if k != ADDRESS_LABEL}
    held = address_holder(s, address, req.name) if is_ip(address) else None
    if held is not None:
        log.warning("host %s registers from %s, host %s's address: kept none", req.name,
                    address, held)  # fmt: skip
    keep = is_ip(address) and held is None
    row.labels = {**labels, **({ADDRESS_LABEL: address} if keep else {})}
    row.networks = list(req.networks)
    row.docker_version, row.agent_version = req.docker_version, req.agent_version
    row.reserved_cores, row.reserved_memory_mb = (
        sorted(set(req.reserved_cores)),
        req.reserved_memory_mb,
    )
    row.cpu_allocation_ratio, row.ram_allocation_ratio = (
        req.cpu_allocation_ratio,
        req.ram_allocation_ratio,
    )
    row.root_disk_quota = req.root_disk_quota
    row.last_heartbeat = m.now()
    s.flush()
    return list_hosts(s, only=row.id)[0]


def address_holder(s: Session, address: str, other_than: str) -> str | None:
    """The host other than ``other_than`` that registered from ``address``, if any: an
    address is one host's (its /metrics target and certificate)."""
    rows = s.scalars(select(m.Host).where(m.Host.name != other_than))
    return next((r.name for r in rows if (r.labels or {}).get(ADDRESS_LABEL) == address), None)


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def show_host(s: Session, name: str) -> model.Host:
    return list_hosts(s, only=by_name(s, name).id)[0]


def heartbeat(s: Session, name: str) -> int:
    """Record a heartbeat; return the host's generation."""
    row = by_name(s, name)
    row.last_heartbeat = m.now()
    return row.generation


def generation(s: Session, name: str) -> int | None:
    """The host's generation (None: no such host), without loading its row."""
    return s.scalar(select(m.Host.generation).where(m.Host.name == name))


def by_name(s: Session, name: str) -> m.Host:
    row = s.scalar(select(m.Host).where(m.Host.name == name))
    if row is None:
        raise NotFound(f"host {name!r} is not registered; see `dockyard host list`")
    return row


def bump(s: Session, host_id: str | None) -> None:
    """Tell the host's agent (through its long poll) that its desired state changed."""
    if host_id is not None:
        s.execute(
            update(m.Host).where(m.Host.id == host_id).values(generation=m.Host.generation + 1)
        )


def update_host(s: Session, name: str, req: model.HostUpdate) -> model.Host:
    row = by_name(s, name)
    if req.enabled is not None:
        row.enabled = req.enabled
        row.disabled_reason = None  # a reason is given through POST /hosts/NAME/disable
    if req.availability_zone is not None:
        row.availability_zone = req.availability_zone
    s.flush()
    return list_hosts(s, only=row.id)[0]


def set_enabled(s: Session, name: str, reason: str | None) -> model.Host:
    """Disable the host with ``reason`` (no new instances; its own keep running), or
    enable it with ``reason`` None. Either is idempotent; a new reason replaces the old."""
    row = by_name(s, name)
    row.enabled, row.disabled_reason = reason is None, reason
    s.flush()
    return list_hosts(s, only=row.id)[0]


def check_agent(host_name: str | None, name: str) -> None:
    if host_name != name:
        raise Forbidden(f"this agent token belongs to host {host_name!r}, not {name!r}")


def down_after(s: Session | None) -> timedelta:
    """How long a host may miss heartbeats before it counts as down (the server's
    ``--host-down-after``, carried by the session; see db/session.py)."""
    value = s.info.get("host_down_after") if s is not None else None
    return value if isinstance(value, timedelta) else HOST_DOWN_AFTER


def is_up(row: m.Host, at: datetime | None = None) -> bool:
    """A heartbeat arrived within the server's down-after period. Computed on every
    read, so nothing has to run for a silent host to be seen as down."""
    return _fresh(row.last_heartbeat, at or m.now(), down_after(object_session(row)))


def beat_is_fresh(last_heartbeat: datetime, s: Session) -> bool:
    """``is_up`` for a host's last heartbeat read on its own (without the row)."""
    return _fresh(last_heartbeat, m.now(), down_after(s))


def _fresh(last_heartbeat: datetime | None, at: datetime, limit: timedelta) -> bool:
    return last_heartbeat is not None and at - last_heartbeat < limit


def _usage(s: Session) -> dict[str, tuple[float, int, int]]:
    q = (
        select(
            m.Instance.host_id,
            func.sum(m.Instance.vcpus).filter(m.Instance.dedicated.is_(False)),
            func.sum(m.Instance.memory_mb),
            func.sum(m.Instance.disk_gb),
        )
        .where(m.Instance.host_id.is_not(None), m.Instance.deleted_at.is_(None))
        .group_by(m.Instance.host_id)
    )
    out = {str(h): (float(v or 0), int(mem or 0), int(d or 0)) for h, v, mem, d in s.execute(q)}
    # a named volume's file takes its whole size on its host's disk once pinned there
    volumes = select(m.Volume.host_id, func.sum((m.Volume.size_mb + 1023) // 1024)).where(
        m.Volume.host_id.is_not(None)
    )
    for h, gb in s.execute(volumes.group_by(m.Volume.host_id)):
        vcpus, mem, disk = out.get(str(h), (0.0, 0, 0))
        out[str(h)] = (vcpus, mem, disk + int(gb or 0))
    for h, (vcpus, mem, disk) in _in_flight(s).items():
        was = out.get(h, (0.0, 0, 0))
        out[h] = (was[0] + vcpus, was[1] + mem, was[2] + disk)
    return out


_MOVING = sorted(s.value for s in IN_FLIGHT)


def _in_flight(s: Session) -> dict[str, tuple[float, int, int]]:
    """What in-flight cold migrations take on the host their instance is not on right now
    (the target before the move, the source, which holds its copy, after it): shared
    vCPUs, memory and disk (named volumes included), by host id. Pinned cores are
    CoreClaim rows on both hosts already."""
    out: dict[str, tuple[float, int, int]] = {}
    moving = (m.Migration.kind == "migration", m.Migration.status.in_(_MOVING))
    # most claims find none: an id query first, since loading Migration rows sets up
    # their eager joins even when no row comes back (a third of a claim's reads)
    if s.scalar(select(m.Migration.id).where(*moving).limit(1)) is None:
        return out
    for mig in s.scalars(select(m.Migration).where(*moving)).unique():
        inst = mig.instance
        other = mig.target_host_id if inst.host_id == mig.source_host_id else mig.source_host_id
        if other is None:
            continue
        gb = sum((int(v.get("size_mb") or 0) + 1023) // 1024 for v in inst.volumes)
        vcpus, mem, disk = out.get(other, (0.0, 0, 0))
        # a resize by migration claimed its new flavor on the target
        shape = mig.flavor if mig.flavor and other == mig.target_host_id else inst
        shared = 0 if shape.dedicated else shape.vcpus
        out[other] = (vcpus + shared, mem + shape.memory_mb, disk + shape.disk_gb + gb)
    return out


def _pins(s: Session) -> dict[str, dict[int, str]]:
    pins: dict[str, dict[int, str]] = defaultdict(dict)
    q = select(m.CoreClaim.host_id, m.CoreClaim.core, m.CoreClaim.instance_id)
    for host_id, core, instance_id in s.execute(q):
        pins[host_id][core] = instance_id
    return pins


def lock_for_claim(s: Session) -> None:
    """Serialise claims. SQLite already holds its write lock (BEGIN IMMEDIATE);
    PostgreSQL locks every host row, in one order, so claims cannot deadlock."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(select(m.Host.id).order_by(m.Host.id).with_for_update())


def scheduler_view(s: Session, only: str | None = None) -> list[tuple[m.Host, HostState]]:
    """Every host (or the one with id ``only``) with what is claimed on it."""
    q = select(m.Host).order_by(m.Host.name)
    if only:
        q = q.where(m.Host.id == only)
    states = claim_view(s, only)  # one builder of host states, the one claims use
    # a host registered between the two reads (PostgreSQL, read committed) waits a turn
    return [(r, states[r.id]) for r in s.scalars(q) if r.id in states]


_STATE_COLUMNS = (
    m.Host.id,
    m.Host.name,
    m.Host.last_heartbeat,
    m.Host.enabled,
    m.Host.availability_zone,
    m.Host.cores,
    m.Host.memory_mb,
    m.Host.disk_gb,
    m.Host.cpu_allocation_ratio,
    m.Host.ram_allocation_ratio,
    m.Host.reserved_memory_mb,
    m.Host.root_disk_quota,
    # as text, parsed once per distinct value below: most hosts share theirs
    cast(m.Host.networks, Text).label("networks"),
    cast(m.Host.reserved_cores, Text).label("reserved_cores"),
    m.Host.disabled_reason,
)


def claim_view(s: Session, only: str | None = None) -> dict[str, HostState]:
    """As ``scheduler_view``, keyed by host id, without loading Host rows: a claim
    reads every host, so it reads only the columns the scheduler needs, by position."""
    q = select(*_STATE_COLUMNS).order_by(m.Host.name)
    if only:
        q = q.where(m.Host.id == only)
    usage, pins, at, parsed = _usage(s), _pinned(s), m.now(), _Parsed()
    limit, out = down_after(s), {}
    for row in s.execute(q):
        host_id, name, heartbeat, enabled, zone, cores, memory_mb, disk_gb = row[:8]
        cpu_ratio, ram_ratio, reserved_mb, root_quota, networks, reserved, reason = row[8:]
        vcpus, mem, disk = usage.get(host_id, (0.0, 0, 0))
        out[host_id] = HostState(
            name=name,
            up=_fresh(heartbeat, at, limit),
            disabled_reason=reason,
            enabled=enabled,
            availability_zone=zone,
            cores=cores,
            memory_mb=memory_mb,
            disk_gb=disk_gb,
            networks=parsed(networks, tuple),
            vcpus_used=vcpus,
            memory_mb_used=mem,
            disk_gb_used=disk,
            pinned=frozenset(pins.get(host_id, ())),
            cpu_allocation_ratio=cpu_ratio,
            ram_allocation_ratio=ram_ratio,
            reserved=parsed(reserved, frozenset),
            reserved_memory_mb=reserved_mb,
            root_disk_quota=root_quota,
        )
    return out


class _Parsed:
    """JSON text to an immutable value, each distinct text parsed once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, Any], Any] = {}

    def __call__(self, raw: str, kind: Callable[[Any], T]) -> T:
        key = (raw, kind)
        if key not in self._seen:
            self._seen[key] = kind(json.loads(raw))
        value: T = self._seen[key]
        return value


def _pinned(s: Session) -> dict[str, set[int]]:
    pinned: dict[str, set[int]] = defaultdict(set)
    for host_id, core in s.execute(select(m.CoreClaim.host_id, m.CoreClaim.core)):
        pinned[host_id].add(core)
    return pinned


def shared_pool(s: Session, host_id: str) -> list[int]:
    """The cores shared instances run on: neither reserved for the host nor pinned.

    Read for one host only (its row and its pinned cores): every desired-state read
    takes it, and the whole scheduler view (usage of every host) is not needed."""
    host = s.get(m.Host, host_id)
    if host is None:
        return []
    pinned = set(s.scalars(select(m.CoreClaim.core).where(m.CoreClaim.host_id == host_id)))
    reserved = set(host.reserved_cores or ())
    return [c for c in range(host.cores) if c not in pinned and c not in reserved]


def list_hosts(s: Session, only: str | None = None) -> list[model.Host]:
    pins = _pins(s)
    return [_host_model(r, st, pins.get(r.id, {})) for r, st in scheduler_view(s, only)]


def _host_model(r: m.Host, st: HostState, pinned: dict[int, str]) -> model.Host:
    shared_cap = st.shared_capacity
    dedicatable = len(st.free_cores) + len(st.pinned)
    resources = {
        "shared_vcpus": model.Resource(
            capacity=shared_cap, used=st.vcpus_used, free=shared_cap - st.vcpus_used
        ),
        "dedicated_cores": model.Resource(
            capacity=dedicatable, used=len(st.pinned), free=len(st.free_cores)
        ),
        "memory_mb": model.Resource(
            capacity=st.memory_capacity_mb, used=st.memory_mb_used, free=st.free_memory_mb
        ),
        "disk_gb": model.Resource(
            capacity=st.disk_gb, used=st.disk_gb_used, free=st.disk_gb - st.disk_gb_used
        ),
    }
    return model.Host(
        id=r.id,
        name=r.name,
        availability_zone=r.availability_zone,
        state="up" if st.up else "down",
        enabled=r.enabled,
        disabled_reason=r.disabled_reason,
        cores=r.cores,
        memory_mb=r.memory_mb,
        disk_gb=r.disk_gb,
        labels=r.labels,
        docker_version=r.docker_version,
        agent_version=r.agent_version,
        networks=r.networks,
        vcpus_used=st.vcpus_used + len(pinned),
        memory_mb_used=st.memory_mb_used,
        disk_gb_used=st.disk_gb_used,
        pinned_cores={str(c): i for c, i in sorted(pinned.items())},
        reserved_cores=r.reserved_cores,
        reserved_memory_mb=r.reserved_memory_mb,
        cpu_allocation_ratio=r.cpu_allocation_ratio,
        ram_allocation_ratio=r.ram_allocation_ratio,
        root_disk_quota=r.root_disk_quota,
        resources=resources,
        last_heartbeat=r.last_heartbeat,
    )


def availability_zones(s: Session) -> list[model.AvailabilityZone]:
    zones: dict[str, list[bool]] = defaultdict(list)
    at = m.now()
    for r in s.scalars(select(m.Host)):
        zones[r.availability_zone].append(is_up(r, at))
    return [
        model.AvailabilityZone(name=z, hosts=len(ups), hosts_up=sum(ups))
        for z, ups in sorted(zones.items())
    ]
