"""The scheduler's view of a host and of a request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

REASONS_SHOWN = 5  # hosts named per filter in a refusal; the count says how many in all
HINTS = {"RootDiskFilter": "root disk size not enforceable: needs overlay2 on XFS with pquota"}


@dataclass(frozen=True)
class HostState:
    name: str
    up: bool
    enabled: bool
    availability_zone: str
    cores: int
    memory_mb: int
    disk_gb: int
    networks: tuple[str, ...] = ("*",)
    vcpus_used: float = 0.0
    memory_mb_used: int = 0
    disk_gb_used: int = 0
    pinned: frozenset[int] = frozenset()
    cpu_allocation_ratio: float = 16.0
    ram_allocation_ratio: float = 1.0
    reserved: frozenset[int] = frozenset()  # cores kept for the host itself
    reserved_memory_mb: int = 0
    root_disk_quota: bool = False
    disabled_reason: str | None = None  # what the admin said when disabling it

    # Derived figures, computed once per state (the fields are frozen): the filters
    # read them for every host on every claim (bench/scheduler.py).
    memory_capacity_mb: float = field(init=False, repr=False, compare=False)
    free_memory_mb: float = field(init=False, repr=False, compare=False)
    free_core_count: int = field(init=False, repr=False, compare=False)  # len(free_cores)
    shared_capacity: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        capacity = (self.memory_mb - self.reserved_memory_mb) * self.ram_allocation_ratio
        taken = sum(1 for c in self.pinned | self.reserved if 0 <= c < self.cores)
        derived = {
            "memory_capacity_mb": capacity,
            "free_memory_mb": capacity - self.memory_mb_used,
            "free_core_count": self.cores - taken,
            "shared_capacity": (self.cores - taken) * self.cpu_allocation_ratio,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def free_cores(self) -> list[int]:
        """Cores neither pinned nor reserved: the shared pool, and what can be pinned."""
        return [c for c in range(self.cores) if c not in self.pinned and c not in self.reserved]


@dataclass(frozen=True)
class GroupSpec:
    """The server group an instance joins: its policy and where its members run now.

    ``members`` counts the group's placed members per host name, read under the
    claim lock, so two claims into one group never both see a host as empty.
    """

    name: str
    policy: str  # anti-affinity | affinity | soft-anti-affinity | soft-affinity
    members: Mapping[str, int] = field(default_factory=dict, hash=False)

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(h for h, n in self.members.items() if n > 0)


@dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mb: int
    disk_gb: int = 0
    dedicated: bool = False
    availability_zone: str | None = None
    network: str | None = None
    volume_host: str | None = None  # where the data of its named volumes lives
    volume_gb: int = 0  # disk its named volumes take on a host that has none of them yet
    group: GroupSpec | None = None  # the server group it joins


def hint(filter_name: str, request: Request) -> str | None:
    """Why a filter rejects hosts, in words a user can act on."""
    if filter_name == "VolumeFilter" and request.volume_host:
        return (
            f"volume data lives on host {request.volume_host}; free room there "
            "or use another volume"
        )
    group = request.group
    if filter_name == "ServerGroupAntiAffinityFilter" and group:
        n = len(group.hosts)
        held = f"{n} hosts already hold" if n != 1 else "1 host already holds"
        return f"anti-affinity: {held} a member of {group.name}"
    if filter_name == "ServerGroupAffinityFilter" and group and group.hosts:
        where = ", ".join(sorted(group.hosts))
        return f"affinity: the members of {group.name} run on {where}, and only there"
    return HINTS.get(filter_name)


@dataclass
class Placement:
    host: HostState | None
    cores: list[int] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    # per filter that can tell, why the first few of its rejected hosts failed it
    named: dict[str, list[str]] = field(default_factory=dict)
    considered: int = 0

    def explain(self, request: Request) -> str:
        what = f"{request.vcpus} vCPUs{' (dedicated)' if request.dedicated else ''} / "
        what += f"{request.memory_mb} MB / {request.disk_gb} GB"
        if self.considered == 0:
            return f"no host can take {what}: no hosts are registered; start a dockyard-agent"
        parts = [
            f"{name} rejected {n} of {self.considered}"
            + (f" ({why})" if (why := self._why(name, n, request)) else "")
            for name, n in self.rejected.items()
        ]
        return f"no host can take {what}: " + ", ".join(parts)

    def reasons(self, request: Request) -> dict[str, str]:
        """Each rejecting filter's count and hint as data: {filter: "2 of 3 hosts: why"}."""
        return {
            name: f"{n} of {self.considered} hosts"
            + (f": {why}" if (why := self._why(name, n, request)) else "")
            for name, n in self.rejected.items()
        }

    def _why(self, name: str, count: int, request: Request) -> str | None:
        named = self.named.get(name)
        if not named:
            return hint(name, request)
        more = count - len(named)
        return "; ".join(named) + (f"; and {more} more" if more > 0 else "")
