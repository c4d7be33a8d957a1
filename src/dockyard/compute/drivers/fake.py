"""An in-memory compute driver with the same contract as the Docker driver.

For tests of the agent's logic and for failure injection: ``fail_next``
makes the next call of a method raise the given error.
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from threading import Event

from dockyard.compute.driver import (
    BuildSpec,
    ContainerEvent,
    ContainerSpec,
    ExecResult,
    FileSpec,
    HostInfo,
    Observed,
)
from dockyard.errors import DockyardError, PermanentError, TemporaryError
from dockyard.model import RegistryLogin


@dataclass
class _Container:
    spec: ContainerSpec
    obs: Observed
    files: dict[str, FileSpec] = field(default_factory=dict)  # its root fs, path -> file


class FakeDriver:
    def __init__(self, host: str = "fake", cores: int = 4, memory_mb: int = 8192) -> None:
        self.host = host
        self._info = HostInfo(
            cores=cores,
            memory_mb=memory_mb,
            disk_gb=100,
            runtime_version="fake",
            facts={"dockerd.version": "fake", "dockerd.live_restore": "true"},
        )
        self.images: set[str] = set()
        self.layer_counts: dict[str, int] = {}  # image ref -> layers (1 when not set)
        self.registry: dict[str, str] = {}  # pushed ref -> digest
        self.pulled: list[str] = []  # the first source of each pull, in order
        self.pull_logins: list[RegistryLogin | None] = []  # the login of each pull
        self.containers: dict[str, _Container] = {}
        self.calls: list[str] = []
        self._faults: dict[str, DockyardError] = {}
        self._fault_times: dict[str, int] = {}
        self._events: queue.Queue[ContainerEvent] = queue.Queue()
        self._clock = itertools.count(1)
        self._pids = itertools.count(1000)
        self._ids = itertools.count(1)
        # what ``exec`` answers: (instance id, command) -> ExecResult; None: exit 0
        self.exec_handler: Callable[[str, list[str]], ExecResult] | None = None
        # builds: the specs asked for; each prints build_output, then waits for
        # build_gate (when set) or its halt, then fails with build_error (when set)
        self.builds: list[BuildSpec] = []
        self.build_output: list[str] = ["Step 1/1 : FROM base", "Successfully built"]
        self.build_gate: Event | None = None
        self.build_error: str | None = None
        self.push_gate: Event | None = None  # a push waits for it (or its halt)
        self._lock = threading.Lock()

    def fail_next(self, method: str, error: DockyardError, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` raise ``error`` (0: none any more)."""
        if times <= 0:
            self._faults.pop(method, None)
            return
        self._faults[method] = error
        self._fault_times[method] = times

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        fault = self._faults.get(method)
        if fault is not None:
            self._fault_times[method] -= 1
            if self._fault_times[method] <= 0:
                del self._faults[method]
            raise fault

    def info(self) -> HostInfo:
        self._enter("info")
        return self._info

    def ensure_image(
        self,
        ref: str,
        fetch_rootfs: Callable[[Path], None] | None,
        command: list[str] | None,
        pulls: Sequence[str] = (),
        login: RegistryLogin | None = None,
    ) -> None:
        self._enter("ensure_image")
        if ref in self.images:
            return
        if pulls:
            self.pulled.append(pulls[0])
            self.pull_logins.append(login)
            self.images.add(ref)
            return
        if fetch_rootfs is None:
            raise PermanentError(f"image {ref} is not on this host")
        self.images.add(ref)

    def create(self, spec: ContainerSpec) -> Observed:
        self._enter("create")
        with self._lock:
            if spec.instance_id in self.containers:
                return self.containers[spec.instance_id].obs
            if spec.image_ref not in self.images:
                raise PermanentError(f"image {spec.image_ref} is missing on this host")
            mounts = tuple((mt.source, mt.target, mt.read_only) for mt in spec.mounts)
            obs = Observed(
                spec.instance_id,
                running=False,
                pid=0,
                started_at="",
                mounts=mounts,
                container_id=f"c{next(self._ids)}",
                rebuild_seq=spec.rebuild_seq,
            )
            self.containers[spec.instance_id] = _Container(spec, obs)
            return obs

    def start(self, instance_id: str) -> Observed:
        self._enter("start")
        with self._lock:
            c = self.containers.get(instance_id)
            if c is None:
                raise PermanentError(f"no container for instance {instance_id}")
            if not c.obs.running:
                c.obs = replace(
                    c.obs, running=True, pid=next(self._pids), started_at=f"t{next(self._clock)}"
                )
                self._events.put(ContainerEvent(instance_id, "start"))
            return c.obs

    def stop(self, instance_id: str, timeout: float = 10) -> None:
        self._enter("stop")
        with self._lock:
            c = self.containers.get(instance_id)
            if c is not None and c.obs.running:
                c.obs = replace(c.obs, running=False, pid=0)
                self._events.put(ContainerEvent(instance_id, "die"))

    def restart(self, instance_id: str, timeout: float = 10) -> Observed:
        self.stop(instance_id, timeout)
        return self.start(instance_id)

    def destroy(self, instance_id: str) -> None:
        self._enter("destroy")
        with self._lock:
            self.containers.pop(instance_id, None)

    def update_resources(self, spec: ContainerSpec) -> None:
        self._enter("update_resources")
        with self._lock:
            c = self.containers.get(spec.instance_id)
            if c is None:
                raise PermanentError(f"no container for instance {spec.instance_id}")
            c.spec = spec

    def inspect(self, instance_id: str) -> Observed | None:
        c = self.containers.get(instance_id)
        return c.obs if c else None

    def put_files(self, instance_id: str, files: Sequence[FileSpec]) -> None:
        self._enter("put_files")
        with self._lock:
            c = self.containers.get(instance_id)
            if c is None:
                raise PermanentError(f"no container for instance {instance_id}")
            c.files.update({f.path: f for f in files})

    def exec(self, instance_id: str, command: Sequence[str], timeout: float) -> ExecResult:
        self._enter("exec")
        c = self.containers.get(instance_id)
        if c is None or not c.obs.running:
            raise PermanentError(f"the container of {instance_id} is not running")
        if self.exec_handler is None:
            return ExecResult(0, "")
        try:
            return self.exec_handler(instance_id, list(command))
        except TimeoutError as exc:
            raise TemporaryError(f"{command[0]} did not end within {timeout:g}s") from exc

    def list(self) -> list[Observed]:
        self._enter("list")
        return [c.obs for c in list(self.containers.values())]

    def commit(self, instance_id: str, ref: str) -> int:
        self._enter("commit")
        c = self.containers.get(instance_id)
        if c is None:
            raise PermanentError(f"no container for instance {instance_id}")
        self.images.add(ref)
        self.layer_counts[ref] = self.layer_counts.get(c.spec.image_ref, 1) + 1
        return self.layer_counts[ref]

    def flatten(self, ref: str) -> int:
        self._enter("flatten")
        if ref not in self.images:
            raise PermanentError(f"no image {ref} on this host")
        self.layer_counts[ref] = 1
        return 1

    def push(
        self, ref: str, login: RegistryLogin | None = None, halt: Event | None = None
    ) -> str:
        self._enter("push")
        while self.push_gate is not None and not self.push_gate.is_set():
            if halt is not None and halt.wait(0.01):
                break
        if halt is not None and halt.is_set():
            raise PermanentError("the push was stopped")
        if ref not in self.images:
            raise PermanentError(f"no image {ref} on this host")
        digest = "sha256:" + hashlib.sha256(f"{ref}|{self.layers(ref)}".encode()).hexdigest()
        self.registry[ref] = digest
        return digest

    def remove_image(self, ref: str, prune: bool = True) -> None:
        self._enter("remove_image")
        self.images.discard(ref)
        self.layer_counts.pop(ref, None)

    def build(self, spec: BuildSpec, output: Callable[[str], None], halt: Event) -> str:
        self._enter("build")
        self.builds.append(spec)
        for line in self.build_output:
            output(line)
        while self.build_gate is not None and not self.build_gate.is_set():
            if halt.wait(0.01):
                break
        if halt.is_set():
            raise PermanentError("the build was stopped")
        if self.build_error is not None:
            raise PermanentError(self.build_error)
        self.images.add(spec.ref)
        return "sha256:" + hashlib.sha256(spec.ref.encode()).hexdigest()

    def layers(self, ref: str) -> int:
        if ref not in self.images:
            raise PermanentError(f"no image {ref} on this host")
        return self.layer_counts.get(ref, 1)

    def events(self, stop: Event) -> Iterator[ContainerEvent]:
        yield ContainerEvent()  # subscribed
        while not stop.is_set():
            try:
                yield self._events.get(timeout=0.05)
            except queue.Empty:
                continue
