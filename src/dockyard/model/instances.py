"""Instances, their volumes, actions and events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from dockyard.model.base import (
    RESERVED_INSTANCE_PATHS,
    Name,
    PowerState,
    Schema,
    SshKey,
    TaskState,
    VmState,
)
from dockyard.model.drift import Drift
from dockyard.model.health import Env, Files, Health, HealthCheck, clash_with_mounts

# --- instances ----------------------------------------------------------------


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


SNAPSHOT_EVERY_MIN = 60  # the floor of any cloud; the server's own is higher (15 min)
SNAPSHOT_EVERY_MAX = 366 * 86400
SNAPSHOT_KEEP_MAX = 100
SnapshotEvery = Annotated[
    int,
    Field(
        ge=SNAPSHOT_EVERY_MIN,
        le=SNAPSHOT_EVERY_MAX,
        description="seconds between periodic snapshots (at least the server's "
        "--snapshot-min-every, 15 minutes unless set)",
    ),
]
SnapshotKeep = Annotated[
    int,
    Field(ge=1, le=SNAPSHOT_KEEP_MAX, description="periodic snapshots kept; older ones go"),
]


class InstanceCreate(Schema):
    name: Name
    image: str = Field(max_length=63)
    flavor: str = Field(max_length=63)
    network: str = Field(max_length=63)
    ip: str | None = Field(default=None, max_length=15)
    volumes: list[VolumeSpec] = Field(default=[], max_length=32)
    availability_zone: str | None = Field(default=None, max_length=63)
    group: str | None = Field(
        default=None, max_length=63, description="a server group of the project to join"
    )
    ssh_keys: list[SshKey] = Field(
        default=[], max_length=32, description="OpenSSH public keys that may log in as root"
    )
    snapshot_every: SnapshotEvery | None = None
    snapshot_keep: SnapshotKeep = 3
    env: Env = Field(default={}, description="environment variables of its processes")
    files: Files = Field(default=[], description="config files written in before it starts")
    health_check: HealthCheck | None = Field(
        default=None, description="run by its host's agent; `health` shows the result"
    )

    @model_validator(mode="after")
    def _one_mount_per_path(self) -> InstanceCreate:
        paths = [v.path for v in self.volumes]
        twice = sorted({p for p in paths if paths.count(p) > 1})
        if twice:
            raise ValueError(f"two volumes mount at {', '.join(twice)}; give each its own path")
        clash = clash_with_mounts(self.files, paths)
        if clash:
            raise ValueError(clash)
        return self


class InstanceUpdate(Schema):
    """PATCH /instances/KEY: only the fields sent change; ``snapshot_every`` null
    turns periodic snapshots off (the ones taken stay, as images)."""

    snapshot_every: SnapshotEvery | None = None
    snapshot_keep: SnapshotKeep | None = None

    @model_validator(mode="after")
    def _something(self) -> InstanceUpdate:
        if not self.model_fields_set:
            raise ValueError("nothing to change; send snapshot_every and/or snapshot_keep")
        if "snapshot_keep" in self.model_fields_set and self.snapshot_keep is None:
            raise ValueError("snapshot_keep cannot be null; give 1 to 100")
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
    group: str | None = Field(default=None, description="its server group")
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
    snapshot_every: int | None = Field(default=None, description="seconds; None: no schedule")
    snapshot_keep: int = 3
    last_snapshot_at: datetime | None = Field(
        default=None, description="when the last periodic snapshot was ordered"
    )
    env: dict[str, str] = Field(default={}, description="environment variables of its processes")
    files: list[str] = Field(default=[], description="paths of its config files")
    health_check: HealthCheck | None = None
    health: Health | None = Field(
        default=None, description="what its agent last saw of the check (None: no check)"
    )
    created_at: datetime
    updated_at: datetime


class InstanceRebuild(Schema):
    """POST /instances/KEY/rebuild: make its container anew, identity kept (UUID, name,
    hostname, IP, MAC, volumes, flavor); the root fs's changes are discarded. Fields
    not sent keep their value; ``health_check`` null removes the check."""

    image: str | None = Field(default=None, max_length=63, description="default: the same")
    env: Env | None = None
    files: Files | None = None
    health_check: HealthCheck | None = None


class InstanceWatched(Schema):
    """What a watch on an instance answers: its state and a version to pass back."""

    version: str = Field(
        description="opaque; changes whenever anything in `instance` changes. Pass it back "
        "as `since` to wait for the next change"
    )
    instance: Instance


class ResizeRequest(Schema):
    flavor: str = Field(max_length=63)
    allow_migrate: bool = Field(
        default=False,
        description="admins: when the flavor no longer fits the host, cold-migrate to a "
        "host where it fits and resize there (the instance stops for the move)",
    )


class ResetState(Schema):
    """An admin's way out of a stuck task: clear task_state, set vm_state."""

    vm_state: Literal["active", "error"] = "active"


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
    drift: list[Drift] = Field(
        default=[],
        description="where its container differs from its spec, as its host "
        "last reported (consistency checks)",
    )
