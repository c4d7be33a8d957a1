"""A host made of the package's fakes, for unit tests of the Worker and the Agent.

Everything a test can look at afterwards is what a user would notice: the
containers left in the driver, the ports and links left in the plumber, the
files left in the agent's state directory, and what the server was told.
"""

from __future__ import annotations

import uuid
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.compute.agent import Agent, AgentConfig
from dockyard.compute.client import FakeServer
from dockyard.compute.drivers.fake import FakeDriver
from dockyard.compute.monitor import FakeMeter
from dockyard.compute.plumber import FakePlumber
from dockyard.compute.procfs import FakeViews
from dockyard.compute.store import Store
from dockyard.compute.transfer import FakeTransfer
from dockyard.compute.volumes import FakeVolumes
from dockyard.compute.worker import Worker
from dockyard.model import (
    DesiredInstance,
    ImageSource,
    Limits,
    NetSpec,
    PowerState,
    SnapshotOrder,
    TaskState,
    VolumeAttachment,
    VolumeCopy,
)

IMAGE = "busybox:fake"


class InlineExecutor(Executor):
    """Runs each step as it is submitted: a reconcile pass returns with its steps done."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the agent's step runner catches its own errors
            future.set_exception(exc)
        return future


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeHost:
    root: Path
    driver: FakeDriver = field(default_factory=lambda: FakeDriver("h1"))
    plumber: FakePlumber = field(default_factory=FakePlumber)
    views: FakeViews = field(default_factory=FakeViews)
    meter: FakeMeter = field(default_factory=FakeMeter)
    volumes: FakeVolumes = field(default_factory=FakeVolumes)
    transfer: FakeTransfer = field(default_factory=FakeTransfer)
    server: FakeServer = field(default_factory=lambda: FakeServer("h1"))
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.driver.images.add(IMAGE)

    @property
    def state_dir(self) -> Path:
        return self.root / "agent"

    def worker(self) -> Worker:
        return Worker(
            self.driver,
            self.server,
            Store(self.state_dir),
            plumber=self.plumber,
            views=self.views,
            meter=self.meter,
            volumes=self.volumes,
            transfer=self.transfer,
        )

    def agent(self) -> Agent:
        cfg = AgentConfig(server="http://fake", token="t", host="h1", state_dir=self.state_dir)
        return Agent(
            cfg,
            self.driver,
            self.server,
            plumber=self.plumber,
            views=self.views,
            meter=self.meter,
            volumes=self.volumes,
            transfer=self.transfer,
            pool=InlineExecutor(),
            clock=self.clock,
        )

    def files_left(self, instance_id: str) -> list[str]:
        """What of the instance is left in the agent's state directory."""
        instances = self.state_dir / "instances"
        return sorted(p.name for p in instances.glob(f"{instance_id}*"))


def new_id() -> str:
    return str(uuid.uuid4())


def instance(
    iid: str,
    *,
    power: str = "running",
    task: TaskState | None = TaskState.spawning,
    power_state: PowerState = PowerState.nostate,
    memory_mb: int = 64,
    limits: Limits | None = None,
    last_octet: int = 5,
    volumes: list[VolumeAttachment] | None = None,
    snapshot: SnapshotOrder | None = None,
    volume_sources: dict[str, VolumeCopy] | None = None,
) -> DesiredInstance:
    net = NetSpec(
        bridge="dyt-unit",
        uplink=None,
        mtu=1500,
        ip=f"198.18.0.{last_octet}",
        prefixlen=24,
        gateway="198.18.0.1",
        mac=f"02:00:c6:12:00:{last_octet:02x}",
        dns=["198.18.0.1"],
    )
    return DesiredInstance(
        id=iid,
        name=f"vm{last_octet}",
        hostname=f"vm{last_octet}",
        image_id="img",
        image_ref=IMAGE,
        image_source=ImageSource.docker,
        image_sha256=None,
        command=None,
        vcpus=1,
        memory_mb=memory_mb,
        dedicated=False,
        cpuset=[],
        pids_limit=100,
        limits=limits or Limits(),
        volumes=volumes or [],
        snapshot=snapshot,
        volume_sources=volume_sources or {},
        net=net,
        power=power,
        task_state=task,
        power_state=power_state,
        reboot_seq=0,
    )
