"""The claim, computed: what an instance takes from a host and from its project's
quota, for a create and for a live resize alike (pure; db/instances.py persists it).

    flavor ──► Shape ──► quota_needs(new, old)          added to the project's usage
                    └──► request() ──► select() ──► Placement (host, cores, rejections)

    resize: the instance's own host, judged as if the instance were not on it
            (without()); a pinned instance keeps its cores and gains the lowest free ones
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from dockyard.scheduler.select import select
from dockyard.scheduler.state import GroupSpec, HostState, Placement, Request
from dockyard.scheduler.weighers import RamWeigher, Weigher


@dataclass(frozen=True)
class Shape:
    """The figures of a flavor that an instance takes from a host and from its quota."""

    vcpus: int
    memory_mb: int
    disk_gb: int = 0
    dedicated: bool = False

    @property
    def dedicated_cores(self) -> int:
        return self.vcpus if self.dedicated else 0


def quota_needs(new: Shape, old: Shape | None = None) -> dict[str, int]:
    """What a create (``old`` None) or a resize from ``old`` adds to a project's usage;
    a negative figure frees quota and is never refused."""
    if old is None:
        return {
            "instances": 1,
            "vcpus": new.vcpus,
            "memory_mb": new.memory_mb,
            "dedicated_cores": new.dedicated_cores,
            "ips": 1,
        }
    return {
        "vcpus": new.vcpus - old.vcpus,
        "memory_mb": new.memory_mb - old.memory_mb,
        "dedicated_cores": new.dedicated_cores - old.dedicated_cores,
    }


def request(
    shape: Shape,
    network: str,
    availability_zone: str | None = None,
    volume_host: str | None = None,
    volume_gb: int = 0,
    group: GroupSpec | None = None,
) -> Request:
    return Request(
        vcpus=shape.vcpus,
        memory_mb=shape.memory_mb,
        disk_gb=shape.disk_gb,
        dedicated=shape.dedicated,
        availability_zone=availability_zone,
        network=network,
        volume_host=volume_host,
        volume_gb=volume_gb,
        group=group,
    )


def place_new(
    hosts: Sequence[HostState], req: Request, weighers: Sequence[Weigher] = (RamWeigher(),)
) -> Placement:
    """A host (and, for dedicated CPU, its lowest free cores) for a new instance."""
    return select(hosts, req, weighers=weighers)


def place_resize(host: HostState, old: Shape, own_cores: Sequence[int], req: Request) -> Placement:
    """The instance's own host for its new shape, judged by the same filters as a
    create as if the instance were not on it. A pinned instance keeps the cores it
    has and gains the lowest free ones, so a live resize never moves a process."""
    state = without(host, old, own_cores)
    placement = select([state], req)
    if placement.host is not None and req.dedicated:
        grown = [*own_cores, *(c for c in state.free_cores if c not in own_cores)]
        placement.cores = grown[: req.vcpus]
    return placement


def without(state: HostState, shape: Shape, cores: Sequence[int]) -> HostState:
    """The host's view as if an instance of ``shape`` pinned to ``cores`` were not on it."""
    return dataclasses.replace(
        state,
        vcpus_used=state.vcpus_used - (0 if shape.dedicated else shape.vcpus),
        memory_mb_used=state.memory_mb_used - shape.memory_mb,
        disk_gb_used=state.disk_gb_used - shape.disk_gb,
        pinned=state.pinned - set(cores),
    )
