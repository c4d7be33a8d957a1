"""An instance's figures and its desired state as its host's agent reads it: the
pieces of db/instances.py that moves, resizes and snapshots share."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import models as m
from dockyard.model import PowerState, TaskState, VmState

# the columns a flavor sets on an instance (a resize or a move's new flavor sets them all)
FIGURES = ("flavor_id", "vcpus", "memory_mb", "disk_gb", "dedicated", "pids_limit", "limits")


def limits(flavor: m.Flavor, image: m.Image) -> dict[str, Any]:
    """The flavor's limits; the /proc view only where the image wants it too."""
    return {**flavor.limits, **({} if image.procview else {"procview": False})}


def set_figures(s: Session, inst: m.Instance, figures: dict[str, Any], cores: list[int]) -> None:
    """Set the instance's figures (FIGURES' columns) and claim exactly ``cores``."""
    for name, value in figures.items():
        setattr(inst, name, dict(value) if name == "limits" else value)
    s.execute(delete(m.CoreClaim).where(m.CoreClaim.instance_id == inst.id))
    s.flush()
    for core in cores:
        s.add(m.CoreClaim(host_id=inst.host_id, core=core, instance_id=inst.id))
    s.flush()
    s.expire(inst, ["cores", "flavor"])


def task_of(inst: m.Instance) -> TaskState | None:
    return TaskState(inst.task_state) if inst.task_state else None


def desired(r: m.Instance, shared_pool: list[int]) -> model.DesiredInstance:
    """Dedicated instances get their pinned cores; shared ones the host's shared pool,
    which shrinks when a core is pinned (and grows back) without a restart."""
    task = task_of(r)
    if task == TaskState.deleting:
        power = "deleted"
    elif task == TaskState.powering_off or (r.vm_state == VmState.stopped.value and task is None):
        power = "stopped"
    else:
        power = "running"
    subnet = next(sn for sn in r.network.subnets if sn.id == r.subnet_id)
    assert r.ip and r.mac and r.hostname
    net = model.NetSpec(
        bridge=r.network.bridge,
        uplink=r.network.uplink,
        mtu=r.network.mtu,
        ip=r.ip,
        prefixlen=ipaddress.IPv4Network(subnet.cidr).prefixlen,
        gateway=subnet.gateway,
        mac=r.mac,
        dns=subnet.dns,
    )
    return model.DesiredInstance(
        id=r.id,
        name=r.name,
        project=r.project.name,
        hostname=r.hostname,
        image_id=r.image.id,
        image_ref=r.image.ref,
        image_source=model.ImageSource(r.image.source),
        image_sha256=r.image.sha256,
        command=r.image.command,
        ssh_keys=r.ssh_keys,
        vcpus=r.vcpus,
        memory_mb=r.memory_mb,
        dedicated=r.dedicated,
        cpuset=[c.core for c in r.cores] if r.dedicated else shared_pool,
        pids_limit=r.pids_limit,
        disk_gb=r.disk_gb,
        limits=model.Limits.model_validate(r.limits or {}),
        # not re-validated: a mount stored before today's path rules must not stop the host
        volumes=[model.VolumeAttachment.model_construct(**v) for v in r.volumes],
        net=net,
        power=power,
        task_state=task,
        power_state=PowerState(r.power_state),
        reboot_seq=r.reboot_seq,
    )
