"""Offline data recovery: files read off a host's disk for an instance by that host's
agent (compute/recovery.py), from its container's writable layer or its named
volumes, even while dockerd there will not start.

    admin: POST /instances/KEY/recoveries {host, path} ──► row queued; host bumped
    host's desired state carries the order ──► agent tars the path, PUTs it
    PUT /agent/recoveries/ID/data (size-limited, sha256) ──► done (or error)
    admin: GET /recoveries/ID, GET /recoveries/ID/data ──► the tar
    with into INSTANCE:PATH: done is "delivering" instead; the target's host's desired
    recoveries carry a delivery ──► its agent GETs the tar, writes it into the
    container (dockerd's archive endpoint) ──► POST .../delivered: done (or failure)

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
from dockyard.db import fencing, hosts, instances, lookup
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
    if req.into is not None:
        target = _check_into(s, who, inst, host, req)
        row.into_instance_id, row.into_path = target.id, req.into.path
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


# where an instance's filesystem is the host's: kernel filesystems, and the files
# dockerd and the agent bind-mount from the host (/etc/hosts, the /proc view)
HOST_BACKED = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def _check_into(
    s: Session, who: Principal, inst: m.Instance, host: m.Host, req: model.RecoveryCreate
) -> m.Instance:
    """The target of ``--into``: an instance the caller may reach, not the very container
    the files are read from, its directory a plain path that is the instance's own."""
    assert req.into is not None
    _check_landing(req.into.path, posixpath.basename(req.path) or "rootfs")
    target = instances.get(s, who, req.into.instance)
    if target.id == inst.id and target.host_id == host.id:
        raise BadRequest(
            f"{target.name} on {host.name} is the container the files are read from: "
            "recover into another instance, or with --to LOCAL_DIR"
        )
    if target.host is None or target.vm_state not in (
        VmState.active, VmState.stopped, VmState.error
    ) or target.task_state is not None:
        raise Conflict(
            f"{target.name} is {target.vm_state}"
            + (f" ({target.task_state})" if target.task_state else "")
            + ": recover into it once it is ACTIVE or SHUTOFF"
        )
    if not hosts.is_up(target.host):
        raise Conflict(
            f"{target.name}'s host {target.host.name} is down: its agent could not write "
            "the files; recover into an instance on a live host"
        )
    return target


def _check_landing(directory: str, name: str) -> None:
    """The directory, and where the recovered entry lands in it, are the instance's own."""
    _check_path(directory)
    for p in (directory, posixpath.join(directory, name)):
        if any(p == b or p.startswith(b + "/") for b in HOST_BACKED):
            raise BadRequest(
                f"{p} inside an instance is backed by its host (kernel files, or files "
                "dockerd binds in): recover into a directory of the instance's own, "
                "e.g. /root/recovered"
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
    """The queued recoveries the host's agent must carry out, and the recovered files
    it must write into its instances, at its generation."""
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
    deliveries = _deliveries(s, host)
    # 0 while nothing is queued: every create and report moves the host's generation,
    # and an agent woken by each to learn there is still nothing to do paid a read here
    # and a parse there per spawn; with orders, any change of the host's answers (+1:
    # never 0, whatever the host's generation)
    busy = orders or deliveries
    return model.RecoveryOrders(
        generation=host.generation + 1 if busy else 0, orders=orders, deliveries=deliveries
    )


def _deliveries(s: Session, host: m.Host) -> list[model.RecoveryDelivery]:
    rows = s.scalars(
        select(m.Recovery)
        .join(m.Instance, m.Instance.id == m.Recovery.into_instance_id)
        .where(m.Recovery.status == "delivering", m.Instance.host_id == host.id)
        .order_by(m.Recovery.created_at)
    ).unique()
    return [
        model.RecoveryDelivery(
            id=r.id, instance_id=r.into_instance_id, path=r.into_path, sha256=r.sha256
        )
        for r in rows
        if r.into_instance_id and r.into_path and r.sha256
    ]


def _delivering(s: Session, host_name: str, recovery_id: str) -> m.Recovery:
    """A recovery whose files this host's agent is to write into one of its instances."""
    row = s.get(m.Recovery, recovery_id)
    target = row.into_instance if row is not None else None
    if row is None or target is None or target.host is None or target.host.name != host_name:
        raise NotFound(f"no recovery {recovery_id} to deliver on host {host_name}")
    return row


def delivery_data(s: Session, host_name: str, recovery_id: str) -> tuple[bytes, str]:
    """The tar, for the target's agent."""
    row = _delivering(s, host_name, recovery_id)
    if row.status != "delivering" or row.data is None or row.sha256 is None:
        raise Conflict(f"recovery {recovery_id} is {row.status}, not delivering")
    return row.data, row.sha256


def delivered(s: Session, host_name: str, recovery_id: str) -> None:
    """The target's agent wrote the files into the instance."""
    row = _delivering(s, host_name, recovery_id)
    if row.status == "delivering":
        row.status, row.finished_at = "done", m.now()
        if row.into_instance is not None and row.into_instance.host_id is not None:
            hosts.bump(s, row.into_instance.host_id)


def _queued(s: Session, host_name: str, recovery_id: str) -> m.Recovery:
    row = s.get(m.Recovery, recovery_id)
    if row is None or row.host.name != host_name:
        raise NotFound(f"no recovery {recovery_id} for host {host_name}")
    return row


def expected(s: Session, host_name: str, recovery_id: str) -> None:
    """Raise unless ``recovery_id`` is an order of this host's (its upload may follow)."""
    _queued(s, host_name, recovery_id)


def store(s: Session, host_name: str, recovery_id: str, data: bytes, sha256: str) -> str | None:
    """The agent's tar: checked against the sha256 it sent, kept for the admin; returns
    the host to wake when the files go on into an instance there."""
    row = _queued(s, host_name, recovery_id)
    if row.status != "queued":
        return None  # a retry after the first upload committed
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise BadRequest(f"the upload's sha256 is {digest}, not {sha256}: it was damaged")
    row.data, row.size, row.sha256 = data, len(data), digest
    hosts.bump(s, row.host_id)
    target = row.into_instance
    if target is None or target.host is None:
        row.status, row.finished_at = "done", m.now()
        return None
    row.status = "delivering"
    hosts.bump(s, target.host.id)  # its agent's long poll carries the delivery
    return target.host.name


def fail(s: Session, host_name: str, recovery_id: str, error: str) -> None:
    """The source's agent could not read it, or the target's could not write it."""
    row = s.get(m.Recovery, recovery_id)
    if row is not None and row.status == "delivering":
        row = _delivering(s, host_name, recovery_id)
        target = row.into_instance
        error = f"writing into {target.name if target else '?'}:{row.into_path}: {error}"
    else:
        row = _queued(s, host_name, recovery_id)
    if row.status in ("queued", "delivering"):
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
        into=f"{row.into_instance.name}:{row.into_path}" if row.into_instance else None,
        size=row.size,
        sha256=row.sha256,
        error=row.error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )
