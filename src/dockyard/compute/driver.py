"""The compute driver interface: what the agent needs from a container runtime.

Every method is idempotent and its docstring states what holds before and
after. Errors are DockyardError subclasses: ``TemporaryError`` when retrying
later may help (runtime restarting), ``PermanentError`` when it will not
(image missing, bad mount).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Protocol

from dockyard.model import Limits, RegistryLogin

LABEL = "dockyard.instance"
HOST_LABEL = "dockyard.host"  # an agent manages only its own host's containers
# the DesiredInstance.rebuild_seq a container was made for: kept by the runtime, so an
# agent restarted in the middle of a rebuild still knows which container is which
REBUILD_LABEL = "dockyard.rebuild_seq"


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False
    managed: bool = False  # a file the agent writes (/etc/hosts), not the user's data


@dataclass(frozen=True)
class ContainerSpec:
    instance_id: str
    name: str
    hostname: str
    image_ref: str
    command: list[str] | None
    vcpus: int
    cpuset: list[int]
    memory_mb: int
    pids_limit: int
    mounts: list[Mount] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    dedicated: bool = False  # cpuset: its own cores; else the host's shared pool
    disk_gb: int = 0  # root disk size; 0 = not capped
    env: dict[str, str] = field(default_factory=dict)  # its processes' environment
    rebuild_seq: int = 0  # recorded on the container (REBUILD_LABEL)

    @property
    def container_name(self) -> str:
        return container_name(self.instance_id)


def container_name(instance_id: str) -> str:
    return f"dy-{instance_id}"


def resources_key(spec: ContainerSpec) -> str:
    """What the limits of a container are, as one comparable string."""
    lim = spec.limits.model_dump_json()
    return f"{spec.vcpus}|{spec.dedicated}|{spec.cpuset}|{spec.memory_mb}|{spec.pids_limit}|{lim}"


@dataclass(frozen=True)
class ContainerEvent:
    """An instance's container started (``action`` "start") or died ("die"); both
    empty: the stream has just (re)subscribed, so whatever happened before is unknown."""

    instance_id: str = ""
    action: str = ""


@dataclass(frozen=True)
class Observed:
    """A container as the runtime reports it."""

    instance_id: str
    running: bool
    pid: int  # 0 when not running
    started_at: str  # changes on every (re)start: tells the agent to re-plumb
    exit_code: int = 0
    oom_killed: bool = False
    writable_dir: str = ""  # host directory of what it wrote to its root fs; "" if unknown
    # (source, target, read only) of its bind mounts, as created (consistency checks)
    mounts: tuple[tuple[str, str, bool], ...] = ()
    container_id: str = ""  # the runtime's id: a recreated container has another
    rebuild_seq: int = 0  # the rebuild_seq it was made for (0: made before rebuilds)


@dataclass(frozen=True)
class FileSpec:
    """A config file to write into a container's root filesystem."""

    path: str  # absolute, normalised (model.health.ConfigFile checked it)
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str  # the last bytes of stdout and stderr, for the health check's detail


BUILD_LINE_MAX = 64 << 10  # bytes of one line of a build's output (git's, the builder's)
BUILD_CGROUP = "dockyard-builds"  # the cgroup parent of every build step's container
BUILD_PIDS_MAX = 1024  # tasks in that cgroup, every build's step together
BUILD_SHM_MB = 64
BUILD_DISK_FLOOR = 0.10  # below this share of the runtime's disk free, no build starts
BUILD_DISK_PRUNE = 0.20  # below this, the builds' dangling layers are pruned first


@dataclass(frozen=True)
class BuildSpec:
    """An image to build from a directory (compute/builds.py): the runtime's classic
    builder, every step's container confined to ``cpuset`` and ``memory_mb`` (no swap),
    a low CPU weight, no network, and the cgroup parent ``cgroup`` whose tasks are
    at most ``pids_max``."""

    context: Path  # the build context: a clone's working tree
    dockerfile: str  # relative to ``context``, checked to resolve inside it
    ref: str  # the local image it makes: ``HOST:PORT/REPO:TAG``
    cpuset: list[int]  # the cores its steps run on (the host's reserved cores)
    memory_mb: int
    cgroup: str = BUILD_CGROUP  # a path below the cgroup hierarchies' root
    pids_max: int = BUILD_PIDS_MAX
    network: str = "none"  # the steps' network: none, or one the operator made for builds


def cores_text(cores: Sequence[int]) -> str:
    """[0, 1, 3] -> '0-1,3': a cpuset list as the kernel and dockerd write it."""
    runs: list[list[int]] = []
    for core in sorted(set(cores)):
        if runs and runs[-1][1] == core - 1:
            runs[-1][1] = core
        else:
            runs.append([core, core])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclass(frozen=True)
class HostInfo:
    cores: int
    memory_mb: int
    disk_gb: int
    runtime_version: str
    root_disk_quota: bool = False  # the storage driver can cap a container's root disk
    storage: str = ""  # e.g. "overlay2 on extfs", for the operator
    # the runtime's part of the host's baseline (consistency checks, monitor/drift.py):
    # dockerd.version, dockerd.storage_driver, dockerd.live_restore, dockerd.cgroup_driver...
    facts: dict[str, str] = field(default_factory=dict)


class ComputeDriver(Protocol):
    def info(self) -> HostInfo:
        """Capacity and runtime version. Raises TemporaryError if the runtime is down."""
        ...

    def ensure_image(
        self,
        ref: str,
        fetch_rootfs: Callable[[Path], None] | None,
        command: list[str] | None,
        pulls: Sequence[str] = (),
        login: RegistryLogin | None = None,
    ) -> None:
        """After: ``ref`` exists locally. With ``pulls`` (``HOST:PORT/REPO@sha256:...``,
        tried in order, with ``login`` when the registries require one) the driver
        pulls the image by digest and names it ``ref``; all
        of them failing is a TemporaryError. Else with ``fetch_rootfs`` the driver may
        call it to download a rootfs tarball into the given path and import it as
        ``ref``; without either a missing image is a PermanentError."""
        ...

    def create(self, spec: ContainerSpec) -> Observed:
        """After: a stopped (or already running) container for the instance exists.
        Already there: returned as is."""
        ...

    def start(self, instance_id: str) -> Observed:
        """After: the container runs. Already running: no-op. Gone: PermanentError."""
        ...

    def stop(self, instance_id: str, timeout: float = 10) -> None:
        """After: the container is not running. Already stopped or gone: no-op."""
        ...

    def restart(self, instance_id: str, timeout: float = 10) -> Observed:
        """Stop then start; the result has a new ``started_at``."""
        ...

    def destroy(self, instance_id: str) -> None:
        """After: no container for the instance. Already gone: succeeds."""
        ...

    def update_resources(self, spec: ContainerSpec) -> None:
        """After: the container's CPU, memory, pids and disk IO limits are those of
        ``spec``, without a restart, and stay so across restarts where the runtime
        keeps them (disk IO throttles: the caller re-applies after each start)."""
        ...

    def inspect(self, instance_id: str) -> Observed | None:
        """The container of the instance, or None."""
        ...

    def list(self) -> list[Observed]:
        """Every container this agent manages (by label)."""
        ...

    def put_files(self, instance_id: str, files: Sequence[FileSpec]) -> None:
        """After: each file is in the container's root filesystem at its path with its
        mode, owned by root, parent directories made (0755) where missing; a file there
        is replaced. Paths resolve inside the container's root: a symbolic link in the
        image (``/etc -> /``, ``-> ../../..``) never leads a write out of it. Works on a
        created container before its first start. No container: PermanentError."""
        ...

    def exec(self, instance_id: str, command: Sequence[str], timeout: float) -> ExecResult:
        """Run ``command`` inside the running container (as its PID 1's user, root) and
        wait for it at most ``timeout`` seconds: exceeded, a TemporaryError (the command
        may still run to its end). Not running or gone: PermanentError."""
        ...

    def events(self, stop: Event) -> Iterator[ContainerEvent]:
        """Yield the starts and deaths of instances' containers, until ``stop``.
        First yields an empty event once subscribed: whatever happened before (a runtime
        that restarted while nobody listened) is unknown, so the caller looks afresh.
        Raises TemporaryError when the stream breaks (runtime restarting)."""
        ...

    # --- snapshots (compute/snapshots.py)

    def commit(self, instance_id: str, ref: str) -> int:
        """After: the local image ``ref`` (``REPO:TAG``) holds the container's root
        filesystem (its image's layers plus one of what it wrote) and the config it runs
        with (command, environment); returns the image's number of layers. Running
        containers are paused for the commit. ``ref`` already there: replaced. No
        container: PermanentError."""
        ...

    def flatten(self, ref: str) -> int:
        """After: ``ref`` names a one-layer image of the same filesystem and the same
        config (Cmd, Entrypoint, Env, WorkingDir, User, Labels); the many-layer image it
        named is removed. Returns 1. Already one layer: no-op. No ``ref``: PermanentError."""
        ...

    def push(
        self, ref: str, login: RegistryLogin | None = None, halt: Event | None = None
    ) -> str:
        """After: the registry of ``ref`` (``HOST:PORT/REPO:TAG``) holds the local image
        ``ref``; returns the manifest's digest (``sha256:...``). Already pushed: the same
        digest, nothing sent again. A registry unreachable is a TemporaryError, a refusal
        (login, quota) a PermanentError. ``halt`` set meanwhile: the push is broken off
        (the registry gets no manifest) and PermanentError "stopped". Only ``login``
        travels: never the host's own registry credentials."""
        ...

    def remove_image(self, ref: str, prune: bool = True) -> None:
        """After: no local image named ``ref`` (layers other images use are kept);
        ``prune`` False keeps its untagged parents too (a build's cache of steps).
        Already gone: no-op."""
        ...

    def layers(self, ref: str) -> int:
        """The number of layers of the local image ``ref``; no such image: PermanentError."""
        ...

    # --- builds (compute/builds.py)

    def build(self, spec: BuildSpec, output: Callable[[str], None], halt: Event) -> str:
        """After: the local image ``spec.ref`` holds what the Dockerfile builds, made by
        the classic builder (BuildKit ignores per-build CPU and memory limits) with the
        cache of earlier builds, never pulling a newer base than the local one; returns
        its id. Each line of the builder's output goes to ``output`` as it comes.
        ``halt`` set: the build stops at once (the runtime kills the step running and
        removes its container) and PermanentError "stopped". A failing step: a
        PermanentError with the builder's message; the runtime away: TemporaryError.
        Its steps run on ``spec.network`` under ``spec.cgroup`` (tasks at most
        ``spec.pids_max``); no registry credentials of the host are sent. The
        runtime's disk with less than BUILD_DISK_FLOOR free (after pruning builds'
        dangling layers): PermanentError, nothing built."""
        ...
