"""Offline data recovery: files read off a host's disk for an instance by that host's
agent (compute/recovery.py), from its container's writable layer or its named
volumes, even while dockerd there will not start.

    admin: POST /instances/KEY/recoveries {host, path} ──► row queued; host bumped
    host's desired state carries the order ──► agent tars the path, PUTs it
    PUT /agent/recoveries/ID/data (size-limited, sha256) ──► done (or error)
    admin: GET /recoveries/ID, GET /recoveries/ID/data ──► the tar

A host qualifies when the data is there and nothing is writing it: the instance's
own host while it is down or the instance is stopped, or the host an evacuation
rebuilt it away from while that data is kept (fenced).
"""

from __future__ import annotations

import hashlib
import posixpath
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import fencing, hosts, lookup
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import BadRequest, Conflict, NotFound
from dockyard.model import VmState
from dockyard.model.moves import RECOVERY_MAX_BYTES

KEPT_FOR = timedelta(hours=24)  # a recovery's files stay this long for the admin to fetch


def create(
    s: Session, who: Principal, key: str, req: model.RecoveryCreate
) -> tuple[model.Recovery, str]:
    """Queue a recovery; returns it and the host whose agent to wake."""
    inst = _instance(s, key)
    host = hosts.by_name(s, req.host)
    _check_path(req.path)
    _check_host(s, inst, host)
    row = m.Recovery(instance_id=inst.id, host_id=host.id, path=req.path, user_name=who.name)
    s.add(row)
    hosts.bump(s, host.id)
    s.flush()
    return to_model(row), host.name


def _instance(s: Session, key: str) -> m.Instance:
    q = select(m.Instance).where(
        m.Instance.deleted_at.is_(None), (m.Instance.id == key) | (m.Instance.name == key)
    )
    return lookup.one(s.scalars(q).unique().all(), "instance", key, "dockyard server list")


def _check_path(path: str) -> None:
    """Plain absolute paths only (the agent checks again, component by component)."""
    if path != "/" and (path != posixpath.normpath(path) or ".." in path.split("/")):
        raise BadRequest(
            f"path {path!r} must be absolute and plain: no '.' or '..' components, "
            "no doubled or trailing slashes (e.g. /root/notes.txt)"
        )


def _check_host(s: Session, inst: m.Instance, host: m.Host) -> None:
    if host.id == inst.host_id:
        if hosts.is_up(host) and inst.vm_state not in (VmState.stopped, VmState.error):
            raise Conflict(
                f"{inst.name} is {inst.vm_state} on {host.name}, which is up: stop it first "
                f"(`dockyard server stop {inst.name}`) so nothing writes while it is read"
            )
        return
    if not any(r.instance_id == inst.id for r in fencing.fenced_rows(s, host)):
        where = inst.host.name if inst.host else "no host"
        raise Conflict(
            f"{host.name} holds no data of {inst.name}: it runs on {where}, and no evacuation "
            f"left its data kept on {host.name} (see `dockyard host evacuations {host.name}`)"
        )


def orders_for_host(s: Session, host_name: str) -> model.RecoveryOrders:
    """The queued recoveries the host's agent must carry out, at its generation."""
    host = hosts.by_name(s, host_name)
    rows = s.scalars(
        select(m.Recovery)
        .where(m.Recovery.host_id == host.id, m.Recovery.status == "queued")
        .order_by(m.Recovery.created_at)
    ).unique()
    orders = [
        model.RecoveryOrder(
            id=r.id,
            instance_id=r.instance_id,
            path=r.path,
            volumes={v["path"]: v["volume_id"] for v in r.instance.volumes if v.get("volume_id")},
            max_bytes=RECOVERY_MAX_BYTES,
        )
        for r in rows
    ]
    # 0 while nothing is queued: every create and report moves the host's generation,
    # and an agent woken by each to learn there is still nothing to do paid a read here
    # and a parse there per spawn; with orders, any change of the host's answers (+1:
    # never 0, whatever the host's generation)
    return model.RecoveryOrders(generation=host.generation + 1 if orders else 0, orders=orders)


def _queued(s: Session, host_name: str, recovery_id: str) -> m.Recovery:
    row = s.get(m.Recovery, recovery_id)
    if row is None or row.host.name != host_name:
        raise NotFound(f"no recovery {recovery_id} for host {host_name}")
    return row


def expected(s: Session, host_name: str, recovery_id: str) -> None:
    """Raise unless ``recovery_id`` is an order of this host's (its upload may follow)."""
    _queued(s, host_name, recovery_id)


def store(s: Session, host_name: str, recovery_id: str, data: bytes, sha256: str) -> None:
    """The agent's tar: checked against the sha256 it sent, kept for the admin."""
    row = _queued(s, host_name, recovery_id)
    if row.status != "queued":
        return  # a retry after the first upload committed
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise BadRequest(f"the upload's sha256 is {digest}, not {sha256}: it was damaged")
    row.data, row.size, row.sha256 = data, len(data), digest
    row.status, row.finished_at = "done", m.now()
    hosts.bump(s, row.host_id)


def fail(s: Session, host_name: str, recovery_id: str, error: str) -> None:
    row = _queued(s, host_name, recovery_id)
    if row.status == "queued":
        row.status, row.error, row.finished_at = "error", error[:1024], m.now()
        hosts.bump(s, row.host_id)


def get(s: Session, recovery_id: str) -> model.Recovery:
    row = s.get(m.Recovery, recovery_id)
    if row is None:
        raise NotFound(f"no recovery {recovery_id}")
    return to_model(row)


def data(s: Session, recovery_id: str) -> tuple[bytes, str]:
    row = s.get(m.Recovery, recovery_id)
    if row is None:
        raise NotFound(f"no recovery {recovery_id}")
    if row.status == "expired":
        raise Conflict(
            f"recovery {recovery_id} was dropped {KEPT_FOR} after it was done; "
            "ask for it again (`dockyard server recover`)"
        )
    if row.status != "done" or row.data is None or row.sha256 is None:
        raise Conflict(f"recovery {recovery_id} is {row.status}; wait until it is done")
    return row.data, row.sha256


def expire(s: Session, now: datetime) -> int:
    """Drop the files of recoveries done more than KEPT_FOR ago (up to 128 MiB each in
    the database); their rows stay, saying expired. Returns how many."""
    rows = s.scalars(
        select(m.Recovery).where(
            m.Recovery.status == "done", m.Recovery.finished_at < now - KEPT_FOR
        )
    ).unique()
    count = 0
    for row in rows:
        row.data, row.status, count = None, "expired", count + 1
    return count


def to_model(row: m.Recovery) -> model.Recovery:
    return model.Recovery(
        id=row.id,
        instance=row.instance.name,
        host=row.host.name,
        path=row.path,
        status=row.status,
        size=row.size,
        sha256=row.sha256,
        error=row.error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )
