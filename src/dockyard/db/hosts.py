"""Hosts: registration, heartbeats, and the usage the scheduler sees."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import models as m
from dockyard.errors import Forbidden, NotFound
from dockyard.scheduler.state import HostState

HEARTBEAT_TIMEOUT = timedelta(seconds=30)


def register(s: Session, req: model.HostRegister) -> m.Host:
    """Create or refresh the host row; an agent restart keeps its claims."""
    row = s.scalar(select(m.Host).where(m.Host.name == req.name))
    if row is None:
        row = m.Host(name=req.name)
        s.add(row)
    row.availability_zone = req.availability_zone
    row.cores, row.memory_mb, row.disk_gb = req.cores, req.memory_mb, req.disk_gb
    row.labels, row.networks = dict(req.labels), list(req.networks)
    row.docker_version = req.docker_version
    row.last_heartbeat = m.now()
    s.flush()
    return row


def heartbeat(s: Session, name: str) -> int:
    """Record a heartbeat; return the host's generation."""
    row = by_name(s, name)
    row.last_heartbeat = m.now()
    return row.generation


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
    if req.availability_zone is not None:
        row.availability_zone = req.availability_zone
    s.flush()
    return list_hosts(s, only=row.id)[0]


def check_agent(host_name: str | None, name: str) -> None:
    if host_name != name:
        raise Forbidden(f"this agent token belongs to host {host_name!r}, not {name!r}")


def is_up(row: m.Host, at: datetime | None = None) -> bool:
    at = at or m.now()
    return row.last_heartbeat is not None and at - row.last_heartbeat < HEARTBEAT_TIMEOUT


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
    rows = s.execute(q)
    return {str(h): (float(v or 0), int(mem or 0), int(d or 0)) for h, v, mem, d in rows}


def _pins(s: Session) -> dict[str, dict[int, str]]:
    pins: dict[str, dict[int, str]] = defaultdict(dict)
    for c in s.scalars(select(m.CoreClaim)):
        pins[c.host_id][c.core] = c.instance_id
    return pins


def scheduler_view(s: Session) -> list[tuple[m.Host, HostState]]:
    """Every host with what is claimed on it, as the scheduler sees it."""
    rows = list(s.scalars(select(m.Host).order_by(m.Host.name)))
    usage, pins, at = _usage(s), _pins(s), m.now()
    out = []
    for r in rows:
        vcpus, mem, disk = usage.get(r.id, (0.0, 0, 0))
        state = HostState(
            name=r.name,
            up=is_up(r, at),
            enabled=r.enabled,
            availability_zone=r.availability_zone,
            cores=r.cores,
            memory_mb=r.memory_mb,
            disk_gb=r.disk_gb,
            networks=tuple(r.networks),
            vcpus_used=vcpus,
            memory_mb_used=mem,
            disk_gb_used=disk,
            pinned=frozenset(pins.get(r.id, {})),
            cpu_allocation_ratio=r.cpu_allocation_ratio,
            ram_allocation_ratio=r.ram_allocation_ratio,
        )
        out.append((r, state))
    return out


def list_hosts(s: Session, only: str | None = None) -> list[model.Host]:
    usage, pins, at = _usage(s), _pins(s), m.now()
    q = select(m.Host).order_by(m.Host.name)
    if only:
        q = q.where(m.Host.id == only)
    out = []
    for r in s.scalars(q):
        vcpus, mem, disk = usage.get(r.id, (0.0, 0, 0))
        dedicated = pins.get(r.id, {})
        out.append(
            model.Host(
                id=r.id,
                name=r.name,
                availability_zone=r.availability_zone,
                state="up" if is_up(r, at) else "down",
                enabled=r.enabled,
                cores=r.cores,
                memory_mb=r.memory_mb,
                disk_gb=r.disk_gb,
                labels=r.labels,
                docker_version=r.docker_version,
                networks=r.networks,
                vcpus_used=vcpus + len(dedicated),
                memory_mb_used=mem,
                disk_gb_used=disk,
                pinned_cores={str(c): i for c, i in sorted(dedicated.items())},
                last_heartbeat=r.last_heartbeat,
            )
        )
    return out


def availability_zones(s: Session) -> list[model.AvailabilityZone]:
    zones: dict[str, list[bool]] = defaultdict(list)
    at = m.now()
    for r in s.scalars(select(m.Host)):
        zones[r.availability_zone].append(is_up(r, at))
    return [
        model.AvailabilityZone(name=z, hosts=len(ups), hosts_up=sum(ups))
        for z, ups in sorted(zones.items())
    ]
