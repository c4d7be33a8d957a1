"""Hosts: what an agent declares, what admins see and change, availability zones."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from dockyard.model.base import Name, Schema

# --- hosts --------------------------------------------------------------------


# what one host can plausibly have: a rogue agent must not claim a datacenter
MAX_HOST_CORES = 4096
MAX_HOST_MEMORY_MB = 64 * 2**20  # 64 TiB
MAX_HOST_DISK_GB = 2**20  # 1 PiB


class HostRegister(Schema):
    """What an agent says about its host when it starts.

    ``availability_zone`` is taken at the host's first registration only; after
    that an admin sets it (``PATCH /hosts/NAME``) and re-registrations keep it.
    """

    name: Name
    availability_zone: Name = "nova"
    cores: int = Field(ge=1, le=MAX_HOST_CORES)
    memory_mb: int = Field(ge=64, le=MAX_HOST_MEMORY_MB)
    disk_gb: int = Field(ge=0, le=MAX_HOST_DISK_GB)
    labels: dict[str, str] = Field(default={}, max_length=64)
    docker_version: str = Field(default="", max_length=64)
    agent_version: str = Field(default="", max_length=64, description="dockyard-agent's")
    networks: list[str] = Field(
        default=["*"],
        max_length=1024,
        description="Dockyard networks this host can plumb; '*' means all",
    )
    reserved_cores: list[int] = Field(
        default=[], max_length=MAX_HOST_CORES, description="cores kept for the host itself"
    )
    reserved_memory_mb: int = Field(
        default=0, ge=0, le=MAX_HOST_MEMORY_MB, description="memory kept for the host"
    )
    cpu_allocation_ratio: float = Field(default=16.0, gt=0, le=256)
    ram_allocation_ratio: float = Field(default=1.0, gt=0, le=4)
    root_disk_quota: bool = Field(
        default=False, description="the storage driver can enforce a root disk size"
    )

    @model_validator(mode="after")
    def _reserved_inside(self) -> HostRegister:
        outside = [c for c in self.reserved_cores if not 0 <= c < self.cores]
        if outside:
            raise ValueError(f"reserved cores {outside} do not exist on a {self.cores}-core host")
        if len(set(self.reserved_cores)) >= self.cores:
            raise ValueError("reserve fewer cores than the host has, or nothing is left to run")
        if self.reserved_memory_mb >= self.memory_mb:
            raise ValueError("reserved memory must be less than the host's memory")
        return self


class Resource(Schema):
    capacity: float = Field(description="what instances may claim (after reserve, x ratio)")
    used: float
    free: float


def _reason(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError("give a reason others can read, e.g. 'maintenance: disk swap'")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError("write the reason on one line, without control characters")
    return text


MAX_REASON = 255
Reason = Annotated[str, Field(max_length=MAX_REASON), AfterValidator(_reason)]


class HostDisable(Schema):
    """Take a host out of scheduling; its instances keep running."""

    reason: Reason = Field(description="why, shown in `host show` and in refusals")


class MetricsCsr(Schema):
    """An agent asks for the certificate of its /metrics endpoint (PEM CSR)."""

    csr: str = Field(max_length=8192)


class MetricsCert(Schema):
    certificate: str = Field(description="PEM, for the host's name and the address it called from")
    address: str = Field(description="the address the server saw: what Prometheus scrapes")


class HostUpdate(Schema):
    enabled: bool | None = None
    availability_zone: Name | None = None


class Beat(Schema):
    """The server's answer to a heartbeat."""

    generation: int
    beat_every: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="seconds until the next heartbeat: a third of the server's "
        "--host-down-after, 10 at most (an older server sends none: 10)",
    )


class Host(Schema):
    id: str
    name: str
    availability_zone: str
    state: str = Field(description="up when a heartbeat arrived recently, else down")
    enabled: bool
    disabled_reason: str | None = Field(default=None, description="why an admin disabled it")
    cores: int
    memory_mb: int
    disk_gb: int
    labels: dict[str, str]
    docker_version: str
    agent_version: str = ""
    networks: list[str]
    vcpus_used: float = 0
    memory_mb_used: int = 0
    disk_gb_used: int = 0
    pinned_cores: dict[str, str] = Field(default={}, description="core -> instance id")
    reserved_cores: list[int] = []
    reserved_memory_mb: int = 0
    cpu_allocation_ratio: float = 16.0
    ram_allocation_ratio: float = 1.0
    root_disk_quota: bool = False
    resources: dict[str, Resource] = Field(
        default={}, description="shared_vcpus, dedicated_cores, memory_mb, disk_gb"
    )
    last_heartbeat: datetime | None = None


class AvailabilityZone(Schema):
    name: str
    hosts: int
    hosts_up: int
