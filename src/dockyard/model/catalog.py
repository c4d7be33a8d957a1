"""Flavors (with their limits), images and networks."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from dockyard.model.base import MAX_DISK_GB, MAX_KBIT, MAX_MEMORY_MB, Name, ProcessName, Schema

# --- flavors and images -------------------------------------------------------


class Limits(Schema):
    """Limits beyond vCPUs and memory; None means no limit of that kind."""

    cpu_cap: float | None = Field(
        default=None, gt=0, le=512, description="shared CPU: hard cap in cores (CFS quota)"
    )
    swap_mb: int = Field(
        default=0, ge=0, le=MAX_MEMORY_MB, description="swap on top of memory; 0 = none"
    )
    disk_read_bps: int | None = Field(default=None, ge=1024, le=1 << 40)
    disk_write_bps: int | None = Field(default=None, ge=1024, le=1 << 40)
    disk_read_iops: int | None = Field(default=None, ge=1, le=1 << 30)
    disk_write_iops: int | None = Field(default=None, ge=1, le=1 << 30)
    net_ingress_kbit: int | None = Field(
        default=None, ge=8, le=MAX_KBIT, description="towards the instance, kbit/s"
    )
    net_egress_kbit: int | None = Field(
        default=None, ge=8, le=MAX_KBIT, description="from the instance, kbit/s"
    )
    net_burst_kb: int | None = Field(
        default=None,
        ge=2,
        le=1 << 30,
        description="burst in KiB (default: 10 ms at the rate, min 32)",
    )
    procview: bool = Field(
        default=True,
        description="show the instance's own memory, CPUs, uptime and load "
        "in /proc (bind-mounted files refreshed by the agent)",
    )


class FlavorCreate(Schema):
    name: Name
    vcpus: int = Field(ge=1, le=512)
    memory_mb: int = Field(ge=16, le=MAX_MEMORY_MB)
    disk_gb: int = Field(default=0, ge=0, le=MAX_DISK_GB)
    dedicated: bool = Field(default=False, description="pin whole cores (cpuset)")
    pids_limit: int = Field(
        default=1024, ge=16, le=4194304, description="the kernel's pid_max at most"
    )
    limits: Limits = Limits()

    @model_validator(mode="after")
    def _cap_is_for_shared(self) -> FlavorCreate:
        if self.dedicated and self.limits.cpu_cap is not None:
            raise ValueError("a CPU cap applies to shared CPU only; dedicated cores are whole")
        if self.limits.cpu_cap is not None and self.limits.cpu_cap > self.vcpus:
            raise ValueError("limits.cpu_cap cannot exceed vcpus")
        return self


class Flavor(FlavorCreate):
    id: str


class ImageSource(StrEnum):
    rootfs = "rootfs"
    docker = "docker"


class ImageKind(StrEnum):
    public = "public"
    snapshot = "snapshot"
    migration = "migration"


class ImageCreate(Schema):
    name: Name
    source: ImageSource
    ref: str | None = Field(
        default=None,
        max_length=255,
        description="docker reference, for source=docker (must exist on hosts)",
    )
    command: list[str] | None = Field(
        default=None, max_length=256, description="PID 1 of instances; default the image's own CMD"
    )
    key_processes: list[ProcessName] = Field(
        default=[], max_length=64, description="programs its PID 1 keeps running (supervisord's)"
    )
    procview: bool = Field(
        default=True,
        description="instances see their own /proc (if their flavor's procview is on too)",
    )

    @model_validator(mode="after")
    def _ref_for_docker(self) -> ImageCreate:
        if self.source == ImageSource.docker and not self.ref:
            raise ValueError("source=docker needs ref, the docker image reference")
        return self


class Image(Schema):
    id: str
    name: str
    source: ImageSource
    ref: str
    status: str = Field(description="queued until a rootfs is uploaded, then active")
    sha256: str | None = None
    size: int | None = None
    command: list[str] | None = None
    key_processes: list[str] = []
    procview: bool = True
    created_at: datetime | None = None
    digest: str | None = Field(
        default=None, description="the manifest's digest in the registry; hosts pull by it"
    )
    registry_url: str | None = Field(
        default=None, description="the primary registry it was pushed to"
    )
    project: str | None = Field(
        default=None, description="the project it belongs to (a snapshot); null: public"
    )
    kind: ImageKind = Field(
        default=ImageKind.public,
        description="public (the admins' catalogue), snapshot (a project's own), or "
        "migration (made by a cold migration; listed only with ?migrations=true)",
    )


# --- networks -----------------------------------------------------------------


class Pool(Schema):
    start: str
    end: str


class SubnetCreate(Schema):
    cidr: str
    gateway: str | None = None
    pools: list[Pool] = []
    reserved: list[str] = []
    dns: list[str] = []
    hostname_rule: str | None = Field(
        default=None,
        max_length=64,
        description="template over the IP's octets o1..o4 (and ip, name), e.g. "
        "'web{o3}{o4:03d}'; octet formats: width 1-8, zero padding, d/x/X",
    )

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            net = ipaddress.IPv4Network(v, strict=True)
        except ValueError as exc:
            raise ValueError(
                f"not an IPv4 network in CIDR form (e.g. 198.18.0.0/24): {exc}"
            ) from exc
        if net.prefixlen > 30:
            raise ValueError("prefix must be /30 or shorter to leave room for instances")
        return str(net)


class Subnet(SubnetCreate):
    id: str


class NetworkCreate(Schema):
    name: Name
    bridge: str = Field(
        min_length=1, max_length=15, pattern=r"^[a-zA-Z0-9_.-]+$", description="Linux bridge"
    )
    uplink: str | None = Field(default=None, max_length=15, description="NIC enslaved")
    mtu: int = Field(default=1500, ge=576, le=9000)
    subnet: SubnetCreate


class Network(Schema):
    id: str
    name: str
    bridge: str
    uplink: str | None
    mtu: int
    subnets: list[Subnet]
