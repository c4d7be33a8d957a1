"""Host weighers: higher weight wins."""

from __future__ import annotations

from typing import Protocol

from dockyard.scheduler.state import HostState, Request


class Weigher(Protocol):
    def weigh(self, host: HostState, req: Request) -> float: ...


class RamWeigher:
    """Spread by free RAM (multiplier > 0) or pack onto the fullest host (< 0)."""

    def __init__(self, multiplier: float = 1.0) -> None:
        self.multiplier = multiplier

    def weigh(self, host: HostState, req: Request) -> float:
        return self.multiplier * host.free_memory_mb


# One member more or less outweighs any difference in free RAM (a host has at most
# 2**26 MB x a RAM ratio of at most 4), so a soft policy places like a hard one while
# a host that honours it fits, and only then shares; RAM breaks ties between equals.
GROUP_WEIGHT = float(2**30)


class ServerGroupSoftAntiAffinityWeigher:
    """Soft anti-affinity: prefer the hosts with the fewest members of the group."""

    def __init__(self, multiplier: float = GROUP_WEIGHT) -> None:
        self.multiplier = multiplier

    def weigh(self, host: HostState, req: Request) -> float:
        group = req.group
        if group is None or group.policy != "soft-anti-affinity":
            return 0.0
        return -self.multiplier * group.members.get(host.name, 0)


class ServerGroupSoftAffinityWeigher:
    """Soft affinity: prefer the hosts with the most members of the group."""

    def __init__(self, multiplier: float = GROUP_WEIGHT) -> None:
        self.multiplier = multiplier

    def weigh(self, host: HostState, req: Request) -> float:
        group = req.group
        if group is None or group.policy != "soft-affinity":
            return 0.0
        return self.multiplier * group.members.get(host.name, 0)


# weigh only requests that join a soft server group: added to every placement's weighers
GROUP_WEIGHERS: tuple[Weigher, ...] = (
    ServerGroupSoftAntiAffinityWeigher(),
    ServerGroupSoftAffinityWeigher(),
)
