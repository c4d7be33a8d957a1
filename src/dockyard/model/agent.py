"""What the server and an agent say to each other: desired state and reports."""

from __future__ import annotations

from pydantic import (
    Field,
)

from dockyard.model.base import PowerState, Schema, TaskState
from dockyard.model.catalog import ImageSource, Limits
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


class DesiredInstance(Schema):
    id: str
    name: str
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
