"""Reconcile planning: a pure function from (desired, observed) to a plan.

    desired (server, or desired.json offline) ─┐
    observed containers (dockerd)              ├─► plan() ─► Plan ─► agent.apply
    records + host veths (local disk, kernel)  ─┘

Level-triggered: the plan depends only on what is, never on which event woke
the loop, so running it again after any crash converges to the same place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from enum import StrEnum

from dockyard.compute.driver import ContainerSpec, Observed, resources_key
from dockyard.compute.store import Record
from dockyard.model import DesiredInstance, PowerState, TaskState
from dockyard.network.plumbing import (
    HOST_PREFIX,
    IFB_PREFIX,
    PEER_PREFIX,
    host_ifname,
    ifb_ifname,
    peer_ifname,
)

_OURS = re.compile(rf"^({HOST_PREFIX}|{PEER_PREFIX}|{IFB_PREFIX})[0-9a-f]{{11}}$")


class Step(StrEnum):
    spawn = "spawn"  # no container: create, start, plumb
    start = "start"  # container stopped: start, plumb
    plumb = "plumb"  # running but its veth is gone or was made for an earlier start
    reboot = "reboot"  # restart, plumb
    rebuild = "rebuild"  # a new container from the desired image, same identity and plumbing
    update = "update"  # limits changed (resize): apply them live
    stop = "stop"
    destroy = "destroy"  # delete requested: container, veth, files
    snapshot = "snapshot"  # an order not carried out yet (or to report again): snapshots.py
    fence = "fence"  # evacuated, lives elsewhere: stop, unplug, keep the data, report once
    report = "report"  # nothing to do on the host; the server's view is stale


@dataclass
class Plan:
    steps: dict[str, Step] = field(default_factory=dict)
    orphans: set[str] = field(default_factory=set)  # containers/files nobody wants
    stale_links: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.steps or self.orphans or self.stale_links)


def power_of(obs: Observed | None) -> PowerState:
    if obs is None:
        return PowerState.nostate
    return PowerState.running if obs.running else PowerState.shutdown


def step_for(
    want: DesiredInstance, obs: Observed | None, rec: Record, links: Set[str]
) -> Step | None:
    """What one instance needs, or None when host and server agree."""
    if want.power == "deleted":
        return Step.destroy
    if want.power == "fenced":
        running = obs is not None and obs.running
        return Step.fence if running or host_ifname(want.id) in links or not rec.fenced else None
    if want.snapshot is not None and want.snapshot.id != rec.snapshot_done:
        return Step.snapshot
    if (
        obs is not None
        and want.task_state == TaskState.rebuilding
        and want.rebuild_seq not in (obs.rebuild_seq, rec.rebuild_refused)
    ):
        # only while the task lasts: once the server ended it (a failed pull reported,
        # say) the old container runs on and later tasks are not held up by retries;
        # a container missing after a crash mid-rebuild is a spawn with the new spec
        return Step.rebuild  # stopped or running; it ends as power says
    step = _power_step(want, obs, rec, links)
    # an order done here whose task still waits: its report again (lost with a crash),
    # unless the host needs more (a migration rolled back: start it again)
    if step in (None, Step.report) and want.snapshot is not None and _waits(want):
        return Step.snapshot
    return step


def _waits(want: DesiredInstance) -> bool:
    return want.task_state in (TaskState.snapshotting, TaskState.migrating)


def _power_step(
    want: DesiredInstance, obs: Observed | None, rec: Record, links: Set[str]
) -> Step | None:
    if want.power == "stopped":
        if obs is not None and obs.running:
            return Step.stop
        return _report_if_stale(want, obs)
    if obs is None:
        return Step.spawn
    if not obs.running:
        return Step.start
    if want.reboot_seq > rec.reboot_seq:
        return Step.reboot
    if rec.plumbed_for != obs.started_at or host_ifname(want.id) not in links:
        return Step.plumb
    if rec.applied != resources_key(spec_of(want)):
        return Step.update
    return _report_if_stale(want, obs)


def spec_of(want: DesiredInstance) -> ContainerSpec:
    """A container spec without its mounts (image, env and mounts change only with a
    rebuild; the limits live)."""
    return ContainerSpec(
        instance_id=want.id,
        name=want.name,
        hostname=want.hostname,
        image_ref=want.image_ref,
        command=want.command,
        vcpus=want.vcpus,
        cpuset=want.cpuset,
        memory_mb=want.memory_mb,
        pids_limit=want.pids_limit,
        limits=want.limits,
        dedicated=want.dedicated,
        disk_gb=want.disk_gb,
        env=dict(want.env),
        rebuild_seq=want.rebuild_seq,
    )


def _report_if_stale(want: DesiredInstance, obs: Observed | None) -> Step | None:
    if want.task_state is not None or want.power_state != power_of(obs):
        return Step.report
    return None


def plan(
    desired: Mapping[str, DesiredInstance] | None,
    observed: Mapping[str, Observed],
    records: Mapping[str, Record],
    links: Set[str],
    known_files: Set[str] = frozenset(),
) -> Plan:
    """Everything the host needs to match ``desired``.

    With ``desired`` None (never reached the server, no cache) nothing is
    destroyed: an agent that knows nothing must not delete anything.
    """
    out = Plan()
    if desired is None:
        return out
    for iid, want in desired.items():
        step = step_for(want, observed.get(iid), records.get(iid, Record(iid)), links)
        if step is not None:
            out.steps[iid] = step
    known = set(observed) | set(records) | set(known_files)
    out.orphans = known - set(desired)
    running = [i for i, w in desired.items() if w.power == "running"]  # fenced: unplugged
    wanted_links = {f(i) for i in running for f in (host_ifname, peer_ifname, ifb_ifname)}
    # only links of instances this agent knows: another agent sharing the network
    # namespace (or a test's own veths) owns the rest, and they are not ours to delete
    mine = {_link_key(i) for i in known | set(desired)}
    out.stale_links = {
        n for n in links if _OURS.match(n) and n[2:] in mine and n not in wanted_links
    }
    return out


def _link_key(instance_id: str) -> str:
    """The part of an instance's link names after the prefix (11 hex of its UUID)."""
    return host_ifname(instance_id)[len(HOST_PREFIX) :]
