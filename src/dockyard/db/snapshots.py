"""Snapshots: an instance's root filesystem committed and pushed as a new image.

    POST /instances/KEY/snapshot ─► Image(queued, snapshot_of=KEY), task snapshotting
    desired instance on its host  ─► SnapshotOrder(id=image id, push_ref, consistent)
    the host's report: snapshot   ─► image active (digest, layers); task cleared
                       error      ─► image error, the instance's fault says why

The image lives in the primary registry like an uploaded one (``ref``'s
repository, ``registry_url``), so any host pulls it by digest; it inherits the
source image's key processes and /proc-view setting. A migration's snapshot is
such an image too, with the migration's id (db/move_steps.py).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import catalog, hosts, instance_log, instances, quotas
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict
from dockyard.model import TaskState, VmState
from dockyard.model.agent import SnapshotOrder
from dockyard.model.migrations import SnapshotCreate

ACTION = "snapshot"


def create(
    s: Session, who: Principal, key: str, req: SnapshotCreate, registry_url: str, request_id: str
) -> tuple[model.Image, str | None, str]:
    """Record the image (queued) and the order; returns it, the host to wake and the
    instance's id."""
    hosts.lock_for_claim(s)  # as a migrate does: one of them finds the other's task
    inst = instances.get(s, who, key)
    if inst.task_state is not None or inst.vm_state not in (VmState.active, VmState.stopped):
        raise Conflict(
            f"cannot snapshot {inst.name} while it is {inst.task_state or inst.vm_state}; "
            "it must be ACTIVE or SHUTOFF with no task running"
        )
    _check_quota(s, inst.project_id)
    row = new_image(s, inst, req.image, registry_url)
    inst.task_state = TaskState.snapshotting.value
    note = f"image {req.image}" + (" (consistent)" if req.consistent else "")
    instance_log.log(s, inst.id, request_id, ACTION, who.name, note)
    hosts.bump(s, inst.host_id)
    s.flush()
    return catalog.image_model(row), inst.host.name if inst.host else None, inst.id


def new_image(
    s: Session, inst: m.Instance, name: str, registry_url: str, image_id: str | None = None
) -> m.Image:
    """A queued image of ``inst``'s root fs, to be pushed to the primary registry; it
    belongs to the instance's project (db/catalog.py: who sees it, name rules)."""
    catalog.private_name_check(s, inst.project_id, name)
    row = m.Image(
        name=name,
        project_id=inst.project_id,
        source=model.ImageSource.docker.value,  # pulled by digest; never takes an upload
        ref="",
        status="queued",
        command=inst.image.command,
        key_processes=list(inst.key_processes),
        procview=inst.image.procview,
        registry_url=registry_url,
        snapshot_of=inst.id,
    )
    if image_id is not None:
        row.id = image_id
    s.add(row)
    s.flush()
    row.ref = f"dockyard/{name.lower()}:{row.id[:8]}"
    return row


def _check_quota(s: Session, project_id: str) -> None:
    """Refuse a snapshot past the project's ``snapshots`` quota. The project's row is
    locked first (PostgreSQL; SQLite's writer holds the database), so two concurrent
    snapshots cannot both squeeze under it."""
    project = s.scalar(select(m.Project).where(m.Project.id == project_id).with_for_update())
    quotas.check(s, project_id, project.name if project else project_id, {"snapshots": 1})


def push_ref(row: m.Image) -> str:
    """HOST:PORT/REPO:TAG in the primary registry for the agent's push."""
    return f"{urlsplit(row.registry_url or '').netloc}/{row.ref}"


def order_for(s: Session, inst: m.Instance) -> SnapshotOrder | None:
    """The order a snapshotting instance's desired state carries (the queued image)."""
    row = s.scalar(
        select(m.Image)
        .where(m.Image.snapshot_of == inst.id, m.Image.status == "queued")
        .order_by(m.Image.created_at.desc())
        .limit(1)
    )
    if row is None:
        return None
    consistent = _consistent(s, inst.id)
    return SnapshotOrder(id=row.id, push_ref=push_ref(row), consistent=consistent)


def _consistent(s: Session, instance_id: str) -> bool:
    note = s.scalar(
        select(m.InstanceAction.message)
        .where(
            m.InstanceAction.instance_id == instance_id,
            m.InstanceAction.action == ACTION,
            m.InstanceAction.finish_time.is_(None),
        )
        .order_by(m.InstanceAction.start_time.desc())
        .limit(1)
    )
    return bool(note and note.endswith("(consistent)"))


def activate(row: m.Image, done: model.SnapshotDone) -> None:
    row.status, row.digest, row.layers = "active", done.digest, done.layers
    row.size = done.size or None


def on_report(s: Session, inst: m.Instance, rep: model.InstanceReport) -> None:
    """A report for a snapshotting instance: the result (or an error) ends the task,
    anything else only updates the power state (a consistent snapshot stops and
    starts it)."""
    inst.power_state = rep.power_state.value
    if rep.snapshot is None and not rep.error:
        return
    if rep.snapshot is not None:
        row = s.get(m.Image, rep.snapshot.id)
        if row is not None and row.snapshot_of == inst.id:
            activate(row, rep.snapshot)
            error = None
        else:
            error = "pushed, but its image was deleted meanwhile"
    else:
        error = rep.error
        order = order_for(s, inst)
        if order is not None and (row := s.get(m.Image, order.id)) is not None:
            row.status = "error"
    inst.fault = f"snapshot failed: {error}" if error else None
    instance_log.close(s, inst.id, ACTION, error)
    inst.task_state = None
    hosts.bump(s, inst.host_id)


def desired_power(inst: m.Instance) -> str:
    return "stopped" if inst.vm_state == VmState.stopped.value else "running"
