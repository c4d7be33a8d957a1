"""The scheduler's view of a host and of a request."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    @property
    def free_memory_mb(self) -> float:
        return self.memory_mb * self.ram_allocation_ratio - self.memory_mb_used

    @property
    def free_cores(self) -> list[int]:
        return [c for c in range(self.cores) if c not in self.pinned]


@dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mb: int
    disk_gb: int = 0
    dedicated: bool = False
    availability_zone: str | None = None
    network: str | None = None


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
        parts = [f"{name} rejected {n} of {self.considered}" for name, n in self.rejected.items()]
        return f"no host can take {what}: " + ", ".join(parts)
