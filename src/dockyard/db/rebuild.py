"""Rebuild: an instance's container made anew from an image, its identity kept.

Nova's rebuild, and the PaaS's in-place deploy: UUID, name, hostname, IP, MAC,
flavor, cores and volumes stay; the image, environment, config files and health
check may change; the root fs's changes are discarded. The server records what
should be and bumps ``rebuild_seq``; the agent recreates the container when the
sequence it was made for differs, and its report closes the task:

    POST /instances/KEY/rebuild -> task rebuilding, rebuild_seq + 1
    agent: pull, recreate, re-plumb, start -> report task_done=rebuilding
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from dockyard import model, states
from dockyard.db import catalog, hosts, instance_log, instance_state
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.db.instances import get, to_model
from dockyard.errors import Conflict
from dockyard.model import VmState
from dockyard.model.health import clash_with_mounts


def rebuild(
    s: Session, who: Principal, key: str, req: model.InstanceRebuild, request_id: str
) -> tuple[model.Instance, str | None]:
    """Begin a rebuild. Returns the instance and the host whose agent to wake."""
    hosts.lock_for_claim(s)  # before the task check, as every task's begin
    inst = get(s, who, key)
    task = states.begin("rebuild", VmState(inst.vm_state), instance_state.task_of(inst))
    if inst.host is None:
        raise Conflict(f"{inst.name} has no host; start or delete it instead")
    if not hosts.is_up(inst.host):
        raise Conflict(
            f"{inst.name}'s host {inst.host.name} is down; wait for it to return, or "
            "ask an admin to evacuate it"
        )
    inst.rebuild_from = {k: getattr(inst, k) for k in instance_state.REBUILT}
    note = _apply(s, who, inst, req)
    inst.rebuild_seq += 1
    inst.task_state = task.value
    inst.health = None  # the new container's health is not known yet
    instance_log.log(s, inst.id, request_id, "rebuild", who.name, note)
    hosts.bump(s, inst.host_id)
    return to_model(inst), inst.host.name


def _apply(s: Session, who: Principal, inst: m.Instance, req: model.InstanceRebuild) -> str:
    """Set what the request changes; returns the action log's note."""
    sent = req.model_fields_set
    changed = []
    if req.image is not None:
        image = catalog.image(s, req.image, who)
        if image.status != "active":
            raise Conflict(f"image {image.name!r} is {image.status}; upload its rootfs first")
        if image.id != inst.image_id:
            changed.append(f"image {inst.image.name} -> {image.name}")
        inst.image_id, inst.image = image.id, image
        inst.key_processes = list(image.key_processes)
        inst.limits = instance_state.limits(inst.flavor, image)
    if req.env is not None:
        inst.env = dict(req.env)
        changed.append("env")
    if req.files is not None:
        clash = clash_with_mounts(req.files, [v["path"] for v in inst.volumes])
        if clash:
            raise Conflict(clash)
        inst.files = [f.model_dump() for f in req.files]
        changed.append("files")
    if "health_check" in sent:
        check = req.health_check
        inst.health_check = check.model_dump() if check else None
        changed.append("health check")
    return ", ".join(changed) or "same image"
