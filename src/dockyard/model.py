"""Wire schemas shared by the server, the agent and the CLI.

One place defines what crosses the network, so the API, its OpenAPI document,
the agent and the CLI never disagree. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def _ssh_public_key(text: str) -> str:
    """One OpenSSH public key line: TYPE BASE64 [COMMENT], the blob naming the same TYPE.

    No control character anywhere (a newline would start a second authorized_keys
    line, which could carry ``command=`` or ``from=`` options of the tenant's choosing).
    """
    hint = "give the .pub file (one line: 'ssh-ed25519 AAAA... comment'), not the private key"
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(
            f"the key contains the control character {bad!r}; send exactly one key per "
            "entry, on one line, without newlines or tabs"
        )
    parts = text.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValueError(f"not an OpenSSH public key; {hint}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the key's base64 is damaged; {hint}") from exc
    size = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + size].decode(errors="replace") != parts[0]:
        raise ValueError(f"the key's blob is not a {parts[0]} key; {hint}")
    return " ".join(parts)


SshKey = Annotated[str, Field(max_length=16384), AfterValidator(_ssh_public_key)]
ProcessName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_.-]{1,63}$")]

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9_.-]*[a-zA-Z0-9])?$",
        description="letters, digits, '-', '_' and '.'; starts and ends with a letter or digit",
    ),
]


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
BIG = 1 << 40  # a count or amount no cloud reaches; keeps sums of them far from overflow
MAX_MEMORY_MB = 1 << 30  # 1 PiB
MAX_DISK_GB = 1 << 30  # 1 EiB
MAX_KBIT = 1 << 32  # 4 Tbit/s
MAX_TEXT = 65536
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_scalars(value: Any) -> None:
    """Refuse what no column or wire format can hold, wherever it sits in ``value``.

    Integers outside the signed 64-bit range (databases overflow), non-finite
    floats, and strings with NUL, lone surrogates (not encodable as UTF-8) or more
    than MAX_TEXT characters. Nested models are skipped: they check their own
    fields. Iterative, so deep nesting cannot exhaust the stack. The error's
    ``at`` is the path inside ``value`` (``0``, ``labels.key``), for the 422.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, bool | BaseModel):
            continue
        problem = _problem(item)
        if problem:
            raise PydanticCustomError("out_of_bounds", problem, {"at": where.lstrip(".")})
        if isinstance(item, dict):
            for k, v in item.items():
                stack.append((k, where))
                stack.append((v, f"{where}.{_printable(k)}"))
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{where}.{i}") for i, v in enumerate(item))


def _problem(item: Any) -> str | None:
    if isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
        return "number out of range: integers must fit in 64 bits"
    if isinstance(item, float) and not math.isfinite(item):
        return "number out of range: must be finite"
    if not isinstance(item, str):
        return None
    if len(item) > MAX_TEXT:
        return f"text too long: at most {MAX_TEXT} characters"
    if "\x00" in item:
        return "text contains a NUL character; remove it"
    if _SURROGATE.search(item):
        return "text contains a lone UTF-16 surrogate; send valid Unicode"
    return None


def _printable(key: Any) -> str:
    return str(key).encode("utf-8", "backslashreplace").decode()[:40]


class Schema(BaseModel):
    """Base of every wire model: unknown fields refused, every scalar bounded,
    datetimes sent in UTC with an offset (SQLite hands them back naive)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        """After the field's own checks (so an ssh key's message wins), before any use."""
        check_scalars(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Role(StrEnum):
    admin = "admin"
    member = "member"
    reader = "reader"


class VmState(StrEnum):
    building = "building"
    active = "active"
    stopped = "stopped"
    error = "error"
    deleted = "deleted"


class TaskState(StrEnum):
    scheduling = "scheduling"
    spawning = "spawning"
    powering_on = "powering-on"
    powering_off = "powering-off"
    rebooting = "rebooting"
    deleting = "deleting"
    resizing = "resizing"


class PowerState(StrEnum):
    nostate = "nostate"
    running = "running"
    shutdown = "shutdown"
    crashed = "crashed"


# --- identity -----------------------------------------------------------------


class ProjectCreate(Schema):
    name: Name


class Project(Schema):
    id: str
    name: str


class UserCreate(Schema):
    name: Name
    project: Name = Field(description="project name")
    role: Role = Role.member


class User(Schema):
    id: str
    name: str
    project: str
    role: Role
    disabled: bool = Field(default=False, description="its tokens are refused until enabled")


class UserUpdate(Schema):
    """Admins: disable or enable a user (at once, on every server), or change its role."""

    disabled: bool | None = None
    role: Role | None = None


MAX_TOKEN_LIFETIME = 10 * 366 * 86400  # seconds


class TokenCreate(Schema):
    expires_in: int | None = Field(
        default=None,
        ge=60,
        le=MAX_TOKEN_LIFETIME,
        description="seconds until the token stops working; null = never",
    )


class TokenCreated(Schema):
    id: str | None = None
    token: str = Field(description="shown once; only its hash is stored")
    user: str | None = None
    host: str | None = None
    expires_at: datetime | None = Field(default=None, description="UTC; null = never")


QUOTA_RESOURCES = (
    "instances",
    "vcpus",
    "memory_mb",
    "dedicated_cores",
    "ips",
    "volumes",
    "volume_gb",
)


class Quota(Schema):
    """Per-project limits; None = unlimited."""

    instances: int | None = Field(default=None, ge=0, le=BIG)
    vcpus: int | None = Field(default=None, ge=0, le=BIG)
    memory_mb: int | None = Field(default=None, ge=0, le=BIG)
    dedicated_cores: int | None = Field(default=None, ge=0, le=BIG)
    ips: int | None = Field(default=None, ge=0, le=BIG)
    volumes: int | None = Field(default=None, ge=0, le=BIG, description="named volumes")
    volume_gb: int | None = Field(
        default=None, ge=0, le=BIG, description="sum of volume sizes, GiB"
    )


class QuotaUsage(Schema):
    limit: int | None
    used: int


class ProjectQuota(Schema):
    project: str
    resources: dict[str, QuotaUsage]


class TokenInfo(Schema):
    id: str
    user: str | None
    host: str | None
    created_at: datetime
    expires_at: datetime | None = Field(default=None, description="UTC; null = never")


class AgentTokenCreate(Schema):
    host: Name


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


class HostUpdate(Schema):
    enabled: bool | None = None
    availability_zone: Name | None = None


class Host(Schema):
    id: str
    name: str
    availability_zone: str
    state: str = Field(description="up when a heartbeat arrived recently, else down")
    enabled: bool
    cores: int
    memory_mb: int
    disk_gb: int
    labels: dict[str, str]
    docker_version: str
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


# --- instances ----------------------------------------------------------------


# An instance path may not cover what the agent mounts (the /proc view, its files)
# nor the kernel's interfaces; a host path may not be the host's root itself.
RESERVED_INSTANCE_PATHS = ("/proc", "/sys", "/dev", "/run/dockyard")


def _clean_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not absolute; write a path starting with /")
    if any(part in (".", "..") for part in text.split("/")) or "//" in text:
        raise ValueError(f"{text!r} is not normalised; write it without '.', '..' or '//'")
    if any(ord(ch) < 32 or ch == ":" for ch in text):
        raise ValueError(f"{text!r} holds ':' or a control character; rename the path")
    return text.rstrip("/") or "/"


def _instance_path(text: str) -> str:
    path = _clean_path(text)
    for reserved in RESERVED_INSTANCE_PATHS:
        if path == "/" or path == reserved or path.startswith(reserved + "/"):
            raise ValueError(
                f"{path!r} would cover / or {', '.join(RESERVED_INSTANCE_PATHS)}; "
                "mount the volume at another path, e.g. /data"
            )
        if reserved.startswith(path + "/"):
            raise ValueError(f"{path!r} would hide {reserved}; mount it at another path")
    return path


def _host_path(text: str) -> str:
    path = _clean_path(text)
    if path == "/":
        raise ValueError("the host's root directory cannot be mounted; give a directory under it")
    return path


InstancePath = Annotated[
    str, Field(max_length=1024, description="absolute path in the instance"),
    AfterValidator(_instance_path),
]  # fmt: skip
HostPath = Annotated[
    str, Field(max_length=1024, description="absolute path on the host (admins only)"),
    AfterValidator(_host_path),
]  # fmt: skip
VOLUME_MIN_MB, VOLUME_MAX_MB = 16, 8 * 2**20  # 16 MiB .. 8 TiB (ext4 files stop at 16 TiB)


class VolumeSpec(Schema):
    """One mount of an instance: a named volume (anyone) or a host path (admins only)."""

    volume: Name | None = Field(default=None, description="a volume of the instance's project")
    host_path: HostPath | None = None
    path: InstancePath
    read_only: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> VolumeSpec:
        if (self.volume is None) == (self.host_path is None):
            raise ValueError("give exactly one of volume (a named volume) or host_path")
        return self


class VolumeAttachment(Schema):
    """A mount as the agent gets it: named volumes with their id and size. The server
    checked the paths when the instance was created; they are not checked again here,
    so one instance stored under older rules cannot stop a host's agent."""

    volume: str | None = None
    host_path: str | None = None
    path: str
    read_only: bool = False
    volume_id: str | None = None
    size_mb: int | None = None


class VolumeCreate(Schema):
    name: Name
    size_mb: int = Field(
        ge=VOLUME_MIN_MB, le=VOLUME_MAX_MB, description="enforced by the volume's filesystem"
    )


class Volume(Schema):
    id: str
    name: str
    project: str
    size_mb: int
    host: str | None = Field(description="where its data lives; set when first attached")
    status: str = Field(description="available, or in-use while an instance has it")
    attached_to: list[str] = Field(default=[], description="names of instances using it")
    created_at: datetime


class HostVolume(Schema):
    """A volume whose data lives on an agent's host."""

    id: str
    size_mb: int


class InstanceCreate(Schema):
    name: Name
    image: str = Field(max_length=63)
    flavor: str = Field(max_length=63)
    network: str = Field(max_length=63)
    ip: str | None = Field(default=None, max_length=15)
    volumes: list[VolumeSpec] = Field(default=[], max_length=32)
    availability_zone: str | None = Field(default=None, max_length=63)
    ssh_keys: list[SshKey] = Field(
        default=[], max_length=32, description="OpenSSH public keys that may log in as root"
    )

    @model_validator(mode="after")
    def _one_mount_per_path(self) -> InstanceCreate:
        paths = [v.path for v in self.volumes]
        twice = sorted({p for p in paths if paths.count(p) > 1})
        if twice:
            raise ValueError(f"two volumes mount at {', '.join(twice)}; give each its own path")
        return self


class Instance(Schema):
    id: str
    name: str
    project: str
    hostname: str | None
    status: str = Field(description="what the console shows: ACTIVE, BUILD, SHUTOFF, ERROR, ...")
    vm_state: VmState
    task_state: TaskState | None
    power_state: PowerState
    host: str | None
    availability_zone: str | None
    ip: str | None
    mac: str | None
    network: str
    flavor: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image: str
    volumes: list[VolumeSpec]
    ssh_keys: list[str] = []
    key_processes: list[str] = Field(
        default=[],
        description="what supervisord runs in it (from the image): monitoring watches these",
    )
    fault: str | None = Field(description="why the instance is in ERROR, and what to do")
    created_at: datetime
    updated_at: datetime


class InstanceWatched(Schema):
    """What a watch on an instance answers: its state and a version to pass back."""

    version: str = Field(
        description="opaque; changes whenever anything in `instance` changes. Pass it back "
        "as `since` to wait for the next change"
    )
    instance: Instance


class ResizeRequest(Schema):
    flavor: str = Field(max_length=63)


class InstanceAction(Schema):
    request_id: str
    action: str
    user: str | None
    start_time: datetime
    finish_time: datetime | None
    result: str | None = Field(description="success, error, or null while running")
    message: str | None


class EventKind(StrEnum):
    oom_kill = "oom-kill"
    pids_limit = "pids-limit"
    cpu_throttled = "cpu-throttled"


class InstanceEvent(Schema):
    time: datetime
    kind: EventKind
    message: str = Field(max_length=512)


class InstanceDetail(Instance):
    """``server show``: the instance with its recent events, newest first."""

    events: list[InstanceEvent] = []


# --- agent <-> server ---------------------------------------------------------


class NetSpec(Schema):
    """Everything the agent needs to plumb one instance without the server."""

    bridge: str
    uplink: str | None
    mtu: int
    ip: str
    prefixlen: int
    gateway: str | None
    mac: str
    dns: list[str]


class DesiredInstance(Schema):
    id: str
    name: str
    hostname: str
    image_id: str
    image_ref: str
    image_source: ImageSource
    image_sha256: str | None
    command: list[str] | None
    ssh_keys: list[str] = []
    vcpus: int
    memory_mb: int
    dedicated: bool
    cpuset: list[int]
    pids_limit: int
    disk_gb: int = 0
    limits: Limits = Limits()
    volumes: list[VolumeAttachment]
    net: NetSpec
    power: str = Field(description="running, stopped, or deleted")
    task_state: TaskState | None
    power_state: PowerState
    reboot_seq: int


class DesiredState(Schema):
    generation: int
    instances: list[DesiredInstance]
    volumes: list[HostVolume] | None = Field(
        default=None,
        description="every volume whose data lives on the host; the agent removes the "
        "data of others nothing uses (None: the server did not say, remove nothing)",
    )


class InstanceReport(Schema):
    """What the agent observed (or failed to do) for one instance."""

    power_state: PowerState
    task_done: TaskState | None = Field(
        default=None, description="the task the agent just finished"
    )
    error: str | None = Field(default=None, max_length=512)
    gone: bool = Field(default=False, description="the container and its plumbing are removed")
