"""The scheduler's view of a host and of a request."""

from __future__ import annotations

from dataclasses import dataclass, field

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

    @property
    def memory_capacity_mb(self) -> float:
        return (self.memory_mb - self.reserved_memory_mb) * self.ram_allocation_ratio

    @property
    def free_memory_mb(self) -> float:
        return self.memory_capacity_mb - self.memory_mb_used

    @property
    def free_cores(self) -> list[int]:
        """Cores neither pinned nor reserved: the shared pool, and what can be pinned."""
        return [c for c in range(self.cores) if c not in self.pinned and c not in self.reserved]

    @property
    def shared_capacity(self) -> float:
        return len(self.free_cores) * self.cpu_allocation_ratio


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


def hint(filter_name: str, request: Request) -> str | None:
    """Why a filter rejects hosts, in words a user can act on."""
    if filter_name == "VolumeFilter" and request.volume_host:
        return (
            f"volume data lives on host {request.volume_host}; free room there "
            "or use another volume"
        )
    return HINTS.get(filter_name)


@dataclass
class Placement:
    host: HostState | None
    cores: list[int] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    considered: int = 0

    def explain(self, request: Request) -> str:
        what = f"{request.vcpus} vCPUs{' (dedicated)' if request.dedicated else ''} / "
        what += f"{request.memory_mb} MB / {request.disk_gb} GB"
        if self.considered == 0:
            return f"no host can take {what}: no hosts are registered; start a dockyard-agent"
        parts = [
            f"{name} rejected {n} of {self.considered}"
            + (f" ({why})" if (why := hint(name, request)) else "")
            for name, n in self.rejected.items()
        ]
        return f"no host can take {what}: " + ", ".join(parts)
