"""Fencing: what a dead host's agent must do, when it comes back, with the instances
an evacuation rebuilt elsewhere (db/evacuation.py starts them).

    evacuation record (migrations row, kind evacuation, source_state kept)
        │ the old host's desired state lists the instance with power "fenced"
        │ (and keeps listing its volumes, so the agent's sweep keeps their data)
        ▼
    old host's agent: stop, unplug, keep container + writable layer + volumes
        │ reports fenced=True  ──►  fenced_at set, action log "fence"
        ▼
    admin: POST /v1/migrations/{id}/release  ──►  source_state released: the host's
        desired state drops the instance and its volumes; its agent removes them

The new host's side ends in :func:`rebuilt`: the first report that finishes the
rebuild's spawn closes the record (finished, or error with the instance kept on the
target, its IP held, so ``dockyard server start`` can try again).

Called from db/instances.py (desired_for_host, report), which this module never
imports: the instance's desired form is built there and handed in.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import hosts
from dockyard.db import models as m
from dockyard.errors import Conflict, NotFound
from dockyard.model import PowerState, TaskState
from dockyard.states import Outcome

KIND = "evacuation"


def fenced_rows(s: Session, host: m.Host) -> list[m.Migration]:
    """The evacuations away from ``host`` whose data is still kept there (one per
    instance: the newest), for instances that are not back on ``host`` today."""
    kept = (
        m.Migration.kind == KIND,
        m.Migration.source_host_id == host.id,
        m.Migration.source_state == "kept",
    )
    # every desired-state read asks, and almost always nothing is kept: a bare id query
    # first (loading Migration rows sets up its eager joins even for none: ~14 ms)
    if s.scalar(select(m.Migration.id).where(*kept).limit(1)) is None:
        return []
    rows = s.scalars(
        select(m.Migration).where(*kept).order_by(m.Migration.started_at.desc())
    ).unique()
    out: dict[str, m.Migration] = {}
    for row in rows:
        if row.instance.host_id != host.id and row.instance.deleted_at is None:
            out.setdefault(row.instance_id, row)
    return list(out.values())


def keeping(s: Session, instance_id: str) -> dict[str, m.Migration]:
    """Host id -> the evacuation whose copy of the instance that host still keeps.

    The instance must not be placed there again until an admin releases it: its
    agent would find the old, stopped container and its volumes and start those,
    and the newer data would be removed with the copy it left behind."""
    rows = s.scalars(
        select(m.Migration).where(
            m.Migration.kind == KIND,
            m.Migration.instance_id == instance_id,
            m.Migration.source_state == "kept",
        )
    ).unique()
    return {r.source_host_id: r for r in rows}


def kept_copy_refusal(inst_name: str, host_name: str, row: m.Migration) -> str:
    return (
        f"{host_name} still keeps the copy of {inst_name} its evacuation left (evacuation "
        f"{row.id}); recover what you need from it, then `dockyard host release {row.id}`, "
        "or pick another host"
    )


def fenced_for_host(
    s: Session, host: m.Host, desired: Callable[[m.Instance], model.DesiredInstance]
) -> tuple[list[model.DesiredInstance], list[model.HostVolume]]:
    """The instances evacuated from ``host`` as its agent must hold them (power fenced,
    on the image they ran there), and the named volumes they name (data kept)."""
    fenced, volumes = [], {}
    for row in fenced_rows(s, host):
        want = desired(row.instance)
        image = s.get(m.Image, row.source_image_id) if row.source_image_id else None
        update: dict[str, object] = {
            "power": "fenced",
            "task_state": None,
            "power_state": PowerState.shutdown,
            "snapshot": None,
            "volume_sources": {},
        }
        if image is not None:
            update |= {
                "image_id": image.id,
                "image_ref": image.ref,
                "image_source": model.ImageSource(image.source),
                "image_sha256": image.sha256,
                "command": image.command,
            }
        fenced.append(want.model_copy(update=update))
        for mount in row.instance.volumes:
            if mount.get("volume_id"):
                volumes[mount["volume_id"]] = model.HostVolume(
                    id=mount["volume_id"], size_mb=int(mount.get("size_mb") or 0)
                )
    return fenced, list(volumes.values())


def fenced_report(s: Session, host_name: str, instance_id: str) -> None:
    """The old host's agent stopped and unplugged an evacuated instance, data kept."""
    host = hosts.by_name(s, host_name)
    row = next((r for r in fenced_rows(s, host) if r.instance_id == instance_id), None)
    if row is None:
        raise NotFound(f"instance {instance_id} was not evacuated from host {host_name}")
    if row.fenced_at is not None:
        return
    row.fenced_at = m.now()
    inst = row.instance
    s.add(
        m.InstanceAction(
            instance_id=inst.id,
            request_id=f"req-fence-{row.id}",
            action="fence",
            user_name=None,
            message=f"{host_name} came back: evacuated, data kept (container stopped and "
            f"unplugged; writable layer and volumes kept for `dockyard server recover "
            f"{inst.name} --host {host_name}`); release it with "
            f"`dockyard host release {row.id}`",
            finish_time=m.now(),
            result="success",
        )
    )


def rebuilt(s: Session, inst: m.Instance, out: Outcome) -> bool:
    """After a report on ``inst``: if it finished the spawn of an evacuation's rebuild,
    close that record (and its action) and return True; the caller then keeps the
    instance's IP and host even if the spawn failed."""
    if out.finished != TaskState.spawning:
        return False
    row = s.scalar(
        select(m.Migration)
        .where(
            m.Migration.kind == KIND,
            m.Migration.instance_id == inst.id,
            m.Migration.status == "starting",
            m.Migration.target_host_id == inst.host_id,
        )
        .order_by(m.Migration.started_at.desc())
        .limit(1)
    )
    if row is None:
        return False
    row.finished_at = m.now()
    if out.error:
        row.status, row.reason = "error", out.error[:1024]
        inst.fault = (
            f"evacuation rebuild on {row.target_host.name if row.target_host else '?'} failed: "
            f"{out.error}; fix the cause and `dockyard server start {inst.name}`"
        )[:1024]
    else:
        row.status, row.resumed_at, inst.fault = "finished", m.now(), None
    _close_action(s, inst.id, out.error)
    return True


def _close_action(s: Session, instance_id: str, error: str | None) -> None:
    row = s.scalar(
        select(m.InstanceAction)
        .where(
            m.InstanceAction.instance_id == instance_id,
            m.InstanceAction.action == "evacuate",
            m.InstanceAction.finish_time.is_(None),
        )
        .order_by(m.InstanceAction.start_time.desc())
        .limit(1)
    )
    if row is not None:
        row.finish_time, row.result = m.now(), "error" if error else "success"
        if error:
            row.message = f"{row.message}: {error}"[:1024] if row.message else error[:1024]


def release(s: Session, migration_id: str) -> tuple[model.Evacuation, str]:
    """Let go of the data an evacuation kept on its dead host: that host's desired
    state drops the instance and its volumes, and its agent removes them. Returns the
    record and the host to wake. Idempotent."""
    row = s.get(m.Migration, migration_id)
    if row is None or row.kind != KIND:
        raise NotFound(f"no evacuation record {migration_id}; see `dockyard host evacuations HOST`")
    if row.source_state not in ("kept", "released"):
        raise Conflict(f"nothing is kept on {row.source_host.name} ({row.source_state})")
    if row.source_state == "kept":
        row.source_state = "released"
        hosts.bump(s, row.source_host_id)
    return to_model(s, row), row.source_host.name


def for_host(s: Session, host_name: str) -> list[model.Evacuation]:
    """Every evacuation away from the host, oldest first."""
    host = hosts.by_name(s, host_name)
    rows = s.scalars(
        select(m.Migration)
        .where(m.Migration.kind == KIND, m.Migration.source_host_id == host.id)
        .order_by(m.Migration.started_at)
    ).unique()
    return [to_model(s, r) for r in rows]


def to_model(s: Session, row: m.Migration) -> model.Evacuation:
    image = s.get(m.Image, row.rebuilt_from) if row.rebuilt_from else None
    return model.Evacuation(
        id=row.id,
        instance=row.instance.name,
        instance_id=row.instance_id,
        source=row.source_host.name,
        target=row.target_host.name if row.target_host else None,
        status=row.status,
        source_state=row.source_state,
        fenced=row.fenced_at is not None,
        rebuilt_from=image.name if image else "?",
        from_snapshot=bool(image is not None and image.snapshot_of == row.instance_id),
        note=row.note or "",
        reason=row.reason,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )
