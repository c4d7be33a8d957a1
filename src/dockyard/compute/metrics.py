"""The agent's figures for /metrics: sampled on a timer, served to any number of scrapes.

    every SAMPLE_SECONDS (Agent's metrics thread ─► Sampler.sample):
      per desired instance  Meter.figures (its cgroup files)            ─┐
                            /proc/net/dev (one read for every veth)      ├─► Snapshot
                            the /proc view's loadavg file                │   (replaced whole)
                            ProcessWatch.poll (supervisord's XML-RPC)    │
      per host              capacity and allocation, tasks, pid_max,     │
                            conntrack, dockerd (ComputeDriver.info)     ─┘
    one thread              /dev/kmsg ─► KernelLog counters by class (compute/kmsg.py)
    GET /metrics            compute/exporter.py renders the last Snapshot: a scrape reads
                            no file, so collection does not grow with scrape frequency

Names and labels are monitor/README.md's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dockyard import cgroups
from dockyard.compute import procfs
from dockyard.compute.driver import ComputeDriver, HostInfo, Observed
from dockyard.errors import DockyardError
from dockyard.model import DesiredInstance
from dockyard.network.plumbing import host_ifname

log = logging.getLogger("dockyard.agent")
SAMPLE_SECONDS = float(os.environ.get("DOCKYARD_METRICS_SECONDS", "5"))
DOCKERD_SECONDS = 15.0  # dockerd's info (up, version, capacity) at most this often
NET_FIELDS = ("bytes", "packets", "errors", "drops")


@dataclass(frozen=True)
class Figures:
    """What a running container's cgroup says (compute/monitor.py's Meter.figures)."""

    cpu_user: float = 0.0  # seconds
    cpu_system: float = 0.0
    periods: int = 0
    throttled_periods: int = 0
    throttled_seconds: float = 0.0
    cpu_limit_cores: float = 0.0  # the CFS cap, else the cpuset's size
    memory_usage: int = 0
    memory_limit: int | None = None
    memory_working_set: int = 0
    memory_cache: int = 0
    memory_rss: int = 0
    memory_swap: int = 0
    oom_kills: int = 0
    pids: int = 0
    pids_limit: int | None = None
    pids_refused: int = 0
    disks: tuple[cgroups.DeviceIo, ...] = ()


def read_figures(cg: cgroups.Cgroup) -> Figures:
    """The figures of a container's cgroup. Container gone: OSError."""
    user, system = cgroups.cpu_times(cg)
    periods, throttled, throttled_usec = cgroups.cfs_periods(cg)
    usage, limit = cgroups.usage_and_limit(cg)
    stat = cgroups.memory_stat(cg)
    pids = cgroups.pids(cg)
    cap = cgroups.cpu_cap(cg)
    return Figures(
        cpu_user=user,
        cpu_system=system,
        periods=periods,
        throttled_periods=throttled,
        throttled_seconds=throttled_usec / 1e6,
        cpu_limit_cores=cap if cap is not None else float(len(_cpus(cgroups.cpuset(cg)))),
        memory_usage=usage,
        memory_limit=limit,
        memory_working_set=max(
            0, usage - stat.get("total_inactive_file", stat.get("inactive_file", 0))
        ),
        memory_cache=stat.get("cache", 0),
        memory_rss=stat.get("rss", 0),
        memory_swap=stat.get("swap", 0),
        oom_kills=cgroups.oom_kills(cg),
        pids=pids.current,
        pids_limit=pids.limit,
        pids_refused=pids.hit,
        disks=tuple(cgroups.io(cg)),
    )


def _cpus(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.strip().split(",")):
        first, _, last = part.partition("-")
        out += range(int(first), int(last or first) + 1)
    return out


@dataclass(frozen=True)
class ProcessState:
    up: bool  # RUNNING in supervisord
    restarts: int  # restarts the agent saw since it started watching


class ProcessWatch(Protocol):
    """The key processes of a running instance (compute/supervisor.py; a dict in tests)."""

    def poll(self, instance_id: str, pid: int) -> dict[str, ProcessState]:
        """Every supervisord program of the container whose PID 1 is ``pid``, by name.
        No supervisord reachable (an image without one): {}."""
        ...

    def forget(self, instance_id: str) -> None:
        """After: nothing of the instance is remembered. Unknown: no-op."""
        ...


class Figured(Protocol):
    def figures(self, instance_id: str, pid: int) -> Figures: ...


@dataclass(frozen=True)
class InstanceSample:
    id: str
    name: str
    project: str
    running: bool
    should_run: bool
    uptime: float = 0.0
    figures: Figures | None = None  # None when not running
    network: dict[str, int] | None = None  # "receive_bytes" ... from the veth's host end
    load: tuple[float, float, float] | None = None
    processes: dict[str, ProcessState] = field(default_factory=dict)


@dataclass(frozen=True)
class HostSample:
    vcpus: float = 0.0
    vcpus_allocated: float = 0.0
    cores: int = 0
    cores_allocated: int = 0
    memory_bytes: int = 0
    memory_allocated_bytes: int = 0
    disk_bytes: int = 0
    disk_allocated_bytes: int = 0
    tasks: int = 0
    pid_max: int = 0
    conntrack_entries: int | None = None  # None: nf_conntrack is not loaded
    conntrack_max: int | None = None
    dockerd_up: bool = False
    dockerd_version: str = ""


@dataclass(frozen=True)
class Snapshot:
    instances: tuple[InstanceSample, ...] = ()
    host: HostSample = HostSample()
    taken_at: float = 0.0  # time.time(); 0 before the first sample


@dataclass(frozen=True)
class Allowance:
    """What the agent was told to keep for the host itself (its flags)."""

    reserved_cores: int = 0
    reserved_memory_mb: int = 0
    cpu_allocation_ratio: float = 16.0
    ram_allocation_ratio: float = 1.0


class Sampler:
    """Takes a Snapshot of every desired instance and of the host; ``latest`` is the last."""

    def __init__(
        self,
        driver: ComputeDriver,
        meter: Figured,
        processes: ProcessWatch,
        instance_dir: Callable[[str], Path],
        allowance: Allowance = Allowance(),
        proc: Path = Path("/proc"),
    ) -> None:
        self.driver, self.meter, self.processes = driver, meter, processes
        self.instance_dir, self.allowance, self.proc = instance_dir, allowance, proc
        self.latest = Snapshot()
        self._info: HostInfo | None = None
        self._info_at = -1e9
        self._dockerd_up = False

    def sample(self, desired: dict[str, DesiredInstance] | None, observed: list[Observed]) -> None:
        """After: ``latest`` holds the figures of now (one failing instance is skipped)."""
        wanted = {iid: want for iid, want in (desired or {}).items() if want.power != "deleted"}
        seen = {o.instance_id: o for o in observed}
        net = self._net_dev()
        samples = [self._instance(want, seen.get(iid), net) for iid, want in sorted(wanted.items())]
        for gone in set(seen) - set(wanted):
            self.processes.forget(gone)
        self.latest = Snapshot(tuple(samples), self._host(wanted.values()), time.time())

    def _instance(
        self, want: DesiredInstance, obs: Observed | None, net: dict[str, dict[str, int]]
    ) -> InstanceSample:
        should = want.power == "running"
        base = InstanceSample(want.id, want.name, want.project, False, should)
        if obs is None or not obs.running or not obs.pid:
            return base
        try:
            figures = self.meter.figures(want.id, obs.pid)
        except (OSError, ValueError):
            return base  # it stopped meanwhile
        return InstanceSample(
            want.id,
            want.name,
            want.project,
            True,
            should,
            uptime=max(0.0, time.time() - _epoch(obs.started_at)),
            figures=figures,
            network=_seen_from_inside(net.get(host_ifname(want.id))),
            load=_load(procfs.view_dir(self.instance_dir(want.id)) / "loadavg"),
            processes=self.processes.poll(want.id, obs.pid),
        )

    def _host(self, wanted: Iterable[DesiredInstance]) -> HostSample:
        info = self._dockerd()
        a = self.allowance
        wanted = list(wanted)
        cores = max(0, (info.cores if info else 0) - a.reserved_cores)
        memory_mb = max(0, (info.memory_mb if info else 0) - a.reserved_memory_mb)
        tasks = _read_int(self.proc / "loadavg", field_no=3)
        return HostSample(
            vcpus=cores * a.cpu_allocation_ratio,
            vcpus_allocated=float(sum(w.vcpus for w in wanted if not w.dedicated)),
            cores=cores,
            cores_allocated=sum(len(w.cpuset) for w in wanted if w.dedicated),
            memory_bytes=int(memory_mb * a.ram_allocation_ratio) * 2**20,
            memory_allocated_bytes=sum(w.memory_mb for w in wanted) * 2**20,
            disk_bytes=(info.disk_gb if info else 0) * 2**30,
            disk_allocated_bytes=sum(w.disk_gb for w in wanted) * 2**30,
            tasks=tasks or 0,
            pid_max=_read_int(self.proc / "sys/kernel/pid_max") or 0,
            conntrack_entries=_read_int(self.proc / "sys/net/netfilter/nf_conntrack_count"),
            conntrack_max=_read_int(self.proc / "sys/net/netfilter/nf_conntrack_max"),
            dockerd_up=self._dockerd_up,
            dockerd_version=info.runtime_version if info else "",
        )

    def _dockerd(self) -> HostInfo | None:
        """dockerd's info, asked at most every DOCKERD_SECONDS; the last one when down."""
        now = time.monotonic()
        if now - self._info_at >= DOCKERD_SECONDS:
            self._info_at = now
            try:
                self._info, self._dockerd_up = self.driver.info(), True
            except DockyardError as exc:
                log.info("dockerd does not answer: %s", exc.detail)
                self._dockerd_up = False
        return self._info

    def _net_dev(self) -> dict[str, dict[str, int]]:
        try:
            return parse_net_dev((self.proc / "net" / "dev").read_text())
        except OSError:
            return {}


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev: interface -> rx_bytes, rx_packets, rx_errors, rx_drops, tx_... ."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        values = rest.split()
        if not sep or len(values) < 12:
            continue
        rx, tx = values[0:4], values[8:12]  # bytes packets errs drop
        row = {f"rx_{k}": int(v) for k, v in zip(NET_FIELDS, rx, strict=True)}
        row.update({f"tx_{k}": int(v) for k, v in zip(NET_FIELDS, tx, strict=True)})
        out[name.strip()] = row
    return out


def _seen_from_inside(host_end: dict[str, int] | None) -> dict[str, int] | None:
    """The host end's counters as the instance sees them: what the host end sends, the
    instance receives."""
    if host_end is None:
        return None
    out = {f"receive_{k}": host_end[f"tx_{k}"] for k in NET_FIELDS}
    out.update({f"transmit_{k}": host_end[f"rx_{k}"] for k in NET_FIELDS})
    return out


def _load(path: Path) -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = path.read_text().split()[:3]
        return float(one), float(five), float(fifteen)
    except (OSError, ValueError):
        return None  # no /proc view (limits.procview off), or not written yet


def _read_int(path: Path, field_no: int = 0) -> int | None:
    try:
        word = path.read_text().split()[field_no]
        return int(word.rpartition("/")[2])  # loadavg's 4th field is running/total
    except (OSError, ValueError, IndexError):
        return None


def _epoch(started_at: str) -> float:
    try:
        return procfs.epoch(started_at)
    except ValueError:
        return time.time()
