"""What the server and an agent say to each other: desired state and reports."""

from __future__ import annotations

from pydantic import (
    Field,
)

from dockyard.model.base import PowerState, Schema, TaskState
from dockyard.model.catalog import ImageSource, Limits
from dockyard.model.health import Env, Files, Health, HealthCheck
from dockyard.model.instances import HostVolume, VolumeAttachment
from dockyard.model.registry import RegistryLogin

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


class VolumeCopy(Schema):
    """A named volume's data as pushed to the registry for a move: one gzip tar layer of
    the files under the volume's data directory (owners, modes, links kept)."""

    pull: str = Field(
        max_length=512, description="HOST:PORT/REPO@sha256:... of the manifest, by digest"
    )
    checksum: str = Field(
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="sha256 over the tree (path, type, mode, owner, size, content of "
        "every entry, sorted by path): the target recomputes it after restoring",
    )


class SnapshotOrder(Schema):
    """Commit the instance's root filesystem and push it to the primary registry: a
    snapshot, or the first half of a migration (``volumes``: push their data too).

    Carried out once per ``id``: the agent remembers the ids it finished and reports
    the same result again instead of committing twice."""

    id: str = Field(max_length=36, description="the snapshot's or migration's id")
    push_ref: str = Field(max_length=512, description="HOST:PORT/REPO:TAG to push to")
    login: RegistryLogin | None = None
    consistent: bool = Field(
        default=False,
        description="stop first, commit, then start again if the instance's power says "
        "running (a migration's source says stopped: it stays stopped)",
    )
    flatten_at: int = Field(
        default=100,
        ge=2,
        le=125,
        description="an image with this many layers or more is flattened (export + "
        "import into one layer) before the push: Docker refuses more than 127",
    )
    volumes: bool = Field(default=False, description="also push each named volume's data")
    layer_on: str | None = Field(
        default=None,
        max_length=512,
        description="a migration's: HOST:PORT/REPO@sha256:... of the instance's image in "
        "push_ref's registry; the agent pushes that image plus one layer of the stopped "
        "container's overlay upper directory (no docker commit, no dockerd gzip), or "
        "commits as usual when it cannot",
    )


class SnapshotDone(Schema):
    id: str = Field(max_length=36, description="the order's id")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="the pushed manifest's")
    layers: int = Field(ge=1, le=127)
    flattened: bool = False
    size: int = Field(default=0, ge=0, description="bytes pushed (compressed layers)")
    volumes: dict[str, VolumeCopy] = Field(default={}, description="volume id -> its data")
    seconds: dict[str, float] = Field(
        default={}, description="where the time went: stop, commit, flatten, push, volumes"
    )


class DesiredInstance(Schema):
    id: str
    name: str
    project: str = Field(default="", description="its project's name (a label of its metrics)")
    hostname: str
    image_id: str
    image_ref: str
    image_source: ImageSource
    image_sha256: str | None
    command: list[str] | None
    image_pulls: list[str] = Field(
        default=[],
        description="HOST:PORT/REPO@sha256:... to pull the image from, in order (the "
        "host's AZ cache, then the primary); empty: fetch the rootfs from the server",
    )
    image_pull_login: RegistryLogin | None = Field(
        default=None, description="the login for image_pulls (the registries require one)"
    )
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
    power: str = Field(
        description="running, stopped, deleted, or fenced: the instance was evacuated "
        "and lives elsewhere now; stop its container and unplug it, keep the container, "
        "its writable layer and its volumes (for recovery), never start it"
    )
    snapshot: SnapshotOrder | None = Field(
        default=None, description="commit and push the root fs (once per order id)"
    )
    volume_sources: dict[str, VolumeCopy] = Field(
        default={},
        description="volume id -> data to restore before its first attach on this host "
        "(a migration's target): pulled, unpacked into the new volume, checksum verified",
    )
    task_state: TaskState | None
    power_state: PowerState
    reboot_seq: int
    env: Env = Field(default={}, description="environment variables of its processes")
    files: Files = Field(
        default=[], description="config files written into its root fs before it starts"
    )
    health_check: HealthCheck | None = Field(
        default=None, description="run by the agent; the result goes in its reports"
    )
    rebuild_seq: int = Field(
        default=0,
        ge=0,
        description="a change recreates the container from image_* with env and files, "
        "keeping the identity, IP, plumbing and volumes (the writable layer is discarded)",
    )


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
    snapshot: SnapshotDone | None = Field(
        default=None, description="the snapshot order this report finishes (its error: error)"
    )
    fenced: bool = Field(
        default=False, description="power fenced carried out: stopped, unplugged, data kept"
    )
    health: Health | None = Field(
        default=None, description="its health check's result (None: it has no check)"
    )
    rebuilt_seq: int | None = Field(
        default=None, ge=0, description="the rebuild_seq the running container was made for"
    )
