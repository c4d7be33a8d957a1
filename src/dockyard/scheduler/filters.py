"""Host filters: each says whether one host can take one request."""

from __future__ import annotations

import math
from typing import Protocol

from dockyard.scheduler.state import HostState, Request


class Filter(Protocol):
    name: str

    def passes(self, host: HostState, req: Request) -> bool: ...


class ComputeFilter:
    """The host is up (recent heartbeat) and an admin has not disabled it."""

    name = "ComputeFilter"

    def passes(self, host: HostState, req: Request) -> bool:
        return host.up and host.enabled


class VolumeFilter:
    """The instance's named volumes have their data on this host (or nowhere yet)."""

    name = "VolumeFilter"  # its hint names the volume's host: state.hint

    def passes(self, host: HostState, req: Request) -> bool:
        return req.volume_host is None or host.name == req.volume_host


class AvailabilityZoneFilter:
    name = "AvailabilityZoneFilter"

    def passes(self, host: HostState, req: Request) -> bool:
        return req.availability_zone is None or host.availability_zone == req.availability_zone


class NetworkFilter:
    """The host is attached to the instance's network."""

    name = "NetworkFilter"

    def passes(self, host: HostState, req: Request) -> bool:
        return req.network is None or "*" in host.networks or req.network in host.networks


class RamFilter:
    name = "RamFilter"

    def passes(self, host: HostState, req: Request) -> bool:
        return host.free_memory_mb >= req.memory_mb


class CoreFilter:
    """Shared vCPUs fit under cores x allocation ratio, minus pinned cores."""

    name = "CoreFilter"

    def passes(self, host: HostState, req: Request) -> bool:
        if req.dedicated:
            return True
        return host.vcpus_used + req.vcpus <= host.shared_capacity + 1e-9


class DedicatedCoreFilter:
    """Enough whole cores are free for a pinned instance.

    A pinned core also cannot carry shared vCPUs, so the shared load already
    placed must still fit on the cores that remain after this claim.
    """

    name = "DedicatedCoreFilter"

    def passes(self, host: HostState, req: Request) -> bool:
        if not req.dedicated:
            return True
        remaining = len(host.free_cores) - req.vcpus
        needed_for_shared = math.ceil(host.vcpus_used / host.cpu_allocation_ratio - 1e-9)
        return remaining >= 0 and remaining >= needed_for_shared


class RootDiskFilter:
    """A root disk size is only promised where the storage driver enforces it."""

    name = "RootDiskFilter"  # its hint for users is in state.HINTS

    def passes(self, host: HostState, req: Request) -> bool:
        return req.disk_gb == 0 or host.root_disk_quota


class DiskFilter:
    """Room on the host's disk for the root disk and for the files of named volumes
    that are not there yet (a volume's file counts its whole size once pinned)."""

    name = "DiskFilter"

    def passes(self, host: HostState, req: Request) -> bool:
        return host.disk_gb_used + req.disk_gb + req.volume_gb <= host.disk_gb


class ServerGroupAntiAffinityFilter:
    """Anti-affinity: no two members of the instance's server group on one host."""

    name = "ServerGroupAntiAffinityFilter"  # its hint counts the hosts taken: state.hint

    def passes(self, host: HostState, req: Request) -> bool:
        group = req.group
        return group is None or group.policy != "anti-affinity" or host.name not in group.hosts


class ServerGroupAffinityFilter:
    """Affinity: every member of the instance's server group on one host (the first
    member goes wherever the other filters allow)."""

    name = "ServerGroupAffinityFilter"  # its hint names the members' host: state.hint

    def passes(self, host: HostState, req: Request) -> bool:
        group = req.group
        if group is None or group.policy != "affinity" or not group.hosts:
            return True
        return host.name in group.hosts


DEFAULT_FILTERS: tuple[Filter, ...] = (
    ComputeFilter(),
    VolumeFilter(),
    AvailabilityZoneFilter(),
    NetworkFilter(),
    # a server group's hard policy after placement's own constraints (up, volume, zone,
    # network) and before capacity, so a refusal names the policy rather than the room
    ServerGroupAntiAffinityFilter(),
    ServerGroupAffinityFilter(),
    RamFilter(),
    CoreFilter(),
    DedicatedCoreFilter(),
    RootDiskFilter(),
    DiskFilter(),
)
