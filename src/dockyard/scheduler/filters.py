"""Host filters: each says whether one host can take one request.

A filter's contract is ``passes(host, req)``. The filters here also offer
``keep(hosts, req)``, the hosts that pass in their order, which ``select`` uses
when a filter has it: one list comprehension with no call per host is what
keeps 1,000 hosts cheap (bench/scheduler.py). Each of them states its test once,
in ``keep``; ``passes`` asks ``keep`` about a single host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from dockyard.scheduler.state import HostState, Request


class Filter(Protocol):
    name: str

    def passes(self, host: HostState, req: Request) -> bool: ...


def keep(flt: Filter, hosts: Sequence[HostState], req: Request) -> list[HostState]:
    """The hosts that pass ``flt``, in their order: its own ``keep`` where it has one."""
    bulk = getattr(flt, "keep", None)
    if bulk is not None:
        kept: list[HostState] = bulk(hosts, req)
        return kept
    return [h for h in hosts if flt.passes(h, req)]


class _ByList:
    """``passes`` from ``keep``, so a filter's test is written once."""

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        raise NotImplementedError

    def passes(self, host: HostState, req: Request) -> bool:
        return bool(self.keep((host,), req))


class ComputeFilter(_ByList):
    """The host is up (recent heartbeat) and an admin has not disabled it."""

    name = "ComputeFilter"

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        return [h for h in hosts if h.up and h.enabled]

    def why(self, host: HostState) -> str:
        """What a user reads about one rejected host (Placement.reasons)."""
        if not host.enabled:
            return f"disabled: {host.name}" + (
                f" ({host.disabled_reason})" if host.disabled_reason else ""
            )
        return f"down: {host.name} (no recent heartbeat)"


class VolumeFilter(_ByList):
    """The instance's named volumes have their data on this host (or nowhere yet)."""

    name = "VolumeFilter"  # its hint names the volume's host: state.hint

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        if req.volume_host is None:
            return list(hosts)
        return [h for h in hosts if h.name == req.volume_host]


class AvailabilityZoneFilter(_ByList):
    name = "AvailabilityZoneFilter"

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        if req.availability_zone is None:
            return list(hosts)
        return [h for h in hosts if h.availability_zone == req.availability_zone]


class NetworkFilter(_ByList):
    """The host is attached to the instance's network."""

    name = "NetworkFilter"

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        net = req.network
        if net is None:
            return list(hosts)
        return [h for h in hosts if "*" in h.networks or net in h.networks]


class RamFilter(_ByList):
    name = "RamFilter"

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        need = req.memory_mb
        return [h for h in hosts if h.free_memory_mb >= need]


class CoreFilter(_ByList):
    """Shared vCPUs fit under cores x allocation ratio, minus pinned cores."""

    name = "CoreFilter"

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        if req.dedicated:
            return list(hosts)
        need = req.vcpus
        return [h for h in hosts if h.vcpus_used + need <= h.shared_capacity + 1e-9]


class DedicatedCoreFilter(_ByList):
    """Enough whole cores are free for a pinned instance.

    A pinned core also cannot carry shared vCPUs, so the shared load already
    placed must still fit on the cores that remain after this claim.
    """

    name = "DedicatedCoreFilter"

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        if not req.dedicated:
            return list(hosts)
        return [h for h in hosts if self._fits(h, req.vcpus)]

    @staticmethod
    def _fits(host: HostState, vcpus: int) -> bool:
        remaining = host.free_core_count - vcpus
        needed_for_shared = math.ceil(host.vcpus_used / host.cpu_allocation_ratio - 1e-9)
        return remaining >= 0 and remaining >= needed_for_shared


class RootDiskFilter(_ByList):
    """A root disk size is only promised where the storage driver enforces it."""

    name = "RootDiskFilter"  # its hint for users is in state.HINTS

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        if req.disk_gb == 0:
            return list(hosts)
        return [h for h in hosts if h.root_disk_quota]


class DiskFilter(_ByList):
    """Room on the host's disk for the root disk and for the files of named volumes
    that are not there yet (a volume's file counts its whole size once pinned)."""

    name = "DiskFilter"

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        need = req.disk_gb + req.volume_gb
        return [h for h in hosts if h.disk_gb_used + need <= h.disk_gb]


class ServerGroupAntiAffinityFilter(_ByList):
    """Anti-affinity: no two members of the instance's server group on one host."""

    name = "ServerGroupAntiAffinityFilter"  # its hint counts the hosts taken: state.hint

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        group = req.group
        if group is None or group.policy != "anti-affinity":
            return list(hosts)
        taken = group.hosts
        return [h for h in hosts if h.name not in taken]


class ServerGroupAffinityFilter(_ByList):
    """Affinity: every member of the instance's server group on one host (the first
    member goes wherever the other filters allow)."""

    name = "ServerGroupAffinityFilter"  # its hint names the members' host: state.hint

    def keep(self, hosts: Sequence[HostState], req: Request) -> list[HostState]:
        group = req.group
        where = group.hosts if group is not None and group.policy == "affinity" else None
        if not where:
            return list(hosts)
        return [h for h in hosts if h.name in where]


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
