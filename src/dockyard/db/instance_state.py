"""An instance's figures and its desired state as its host's agent reads it: the
pieces of db/instances.py that moves, resizes and snapshots share."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session, defaultload, lazyload, object_session

from dockyard import model
from dockyard.db import models as m
from dockyard.model import PowerState, TaskState, VmState
from dockyard.model.health import counts as health_counts

# the columns a flavor sets on an instance (a resize or a move's new flavor sets them all)
FIGURES = ("flavor_id", "vcpus", "memory_mb", "disk_gb", "dedicated", "pids_limit", "limits")


# an instance's collections that its wire form (to_model) and a report do not read:
# loaded when used (a delete, a failed spawn), not with every watch or report
UNREAD = (
    lazyload(m.Instance.cores),
    defaultload(m.Instance.network).lazyload(m.Network.subnets),
)

# what a rebuild may change, kept in rebuild_from until the agent says it is done
REBUILT = ("image_id", "env", "files", "health_check", "key_processes", "limits")


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
    # Constructed, not validated: every value comes from rows the server validated when
    # it stored them (the network, subnet and flavor as created, the instance's request,
    # the addresses IPAM chose), and the agent validates the whole state it receives
    # (model.from_newer), so no bound is skipped where the data crosses to a host.
    # Validating it here again cost a third of building a host's desired state, which
    # every change on the host rebuilds for every instance on it.
    net = model.NetSpec.model_construct(
        bridge=r.network.bridge,
        uplink=r.network.uplink,
        mtu=r.network.mtu,
        ip=r.ip,
        prefixlen=ipaddress.IPv4Network(subnet.cidr).prefixlen,
        gateway=subnet.gateway,
        mac=r.mac,
        dns=subnet.dns,
    )
    return model.DesiredInstance.model_construct(
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
        # a key no longer known (a limit stored by an older version) is left out
        limits=model.Limits.model_construct(**(r.limits or {})),
        volumes=[model.VolumeAttachment.model_construct(**v) for v in r.volumes],
        net=net,
        power=power,
        task_state=task,
        power_state=PowerState(r.power_state),
        reboot_seq=r.reboot_seq,
        env=r.env,
        files=[model.ConfigFile.model_construct(**f) for f in r.files],
        health_check=health_check(r),
        rebuild_seq=r.rebuild_seq,
    )


def health_check(r: m.Instance) -> model.HealthCheck | None:
    """Its stored check (validated when stored, so constructed here)."""
    return model.HealthCheck.model_construct(**r.health_check) if r.health_check else None


def rollback_rebuild(inst: m.Instance) -> None:
    """A failed rebuild: the record describes the container that still runs (or is
    made again) — its image and settings from before — not the one that failed."""
    for name, value in (inst.rebuild_from or {}).items():
        setattr(inst, name, value)
    inst.rebuild_from = None
    s = object_session(inst)
    if s is not None and inst.image.id != inst.image_id:
        inst.image = s.get_one(m.Image, inst.image_id)
    member = _member(inst)  # a stack's member runs its old release still
    if member is not None and member.from_release_id is not None:
        member.release_id, member.from_release_id = member.from_release_id, None


def rebuild_done(inst: m.Instance) -> None:
    """A rebuild that worked: a stack member's old release is no longer one to go back
    to (a later failed rebuild, a user's own, must not restore it)."""
    member = _member(inst)
    if member is not None:
        member.from_release_id = None


def _member(inst: m.Instance) -> m.StackMember | None:
    """Its row as a stack's member, if it is one."""
    s = object_session(inst)
    return s.get(m.StackMember, inst.id) if s is not None else None


def fold_report(inst: m.Instance, rep: model.InstanceReport) -> model.InstanceReport:
    """The report as the state machine should read it; keeps the health it carries.

    Health counts only from a running container made for the current rebuild
    sequence (a stopped one, or the old one still reporting during a rebuild, says
    nothing about the instance as it should be) -- or, with no rebuild in flight, from
    the one that runs: after a failed rebuild the old container runs on with its old
    sequence, and it is the instance (model.health.counts); a report that carries none keeps
    the last (agents send health with its changes, not with every report). An agent
    that says the running container was made for the current sequence has finished
    the rebuild even if it did not name the task (it restarted in between)."""
    rebuilding = inst.task_state == TaskState.rebuilding.value
    current = health_counts(rep.rebuilt_seq, inst.rebuild_seq, rebuilding)
    running = rep.power_state == PowerState.running
    if not (current and running) or inst.health_check is None:
        inst.health = None
    elif rep.health is not None:  # a report without health (a power or task report) keeps it
        inst.health = rep.health.model_dump()
    done = rep.rebuilt_seq is not None and rep.rebuilt_seq >= inst.rebuild_seq
    if inst.task_state == TaskState.rebuilding.value and done and rep.task_done is None:
        return rep.model_copy(update={"task_done": TaskState.rebuilding})
    return rep
