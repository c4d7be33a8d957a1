"""The agent's side of the /proc view: files per container, refreshed in place.

    VIEWS/<id>/                               the instance's view directory; VIEWS is
                                              /run/dockyard-agent/<STATE_DIR>/views (a
                                              tmpfs) unless --view-dir says otherwise
      meminfo cpuinfo stat uptime loadavg     bind-mounted at create over /proc/...
      swaps diskstats cpu-online              (and /sys/devices/system/cpu/online)
      authorized_keys disk loadavg-samples    for sshd, the container tools, audits
    the whole directory                       bind-mounted read-only at /run/dockyard

Files are rewritten in place (same inode: a bind mount pins the inode, so a
rename would never be seen). If the agent stops, readers keep reading the
last values; nothing in the read path can fail with ENOTCONN as lxcfs does.

Why tmpfs: the agent rewrites 8 files of every container every second; on a
disk file system each in-place rewrite dirties the inode and the journal, on
tmpfs it is a page copy. A tmpfs is empty after the host reboots: the worker
finds /proc/meminfo missing before it starts the container and ``prepare``
writes the view again (it does the same for a view lost any other way). An
instance whose view directory already sits under its state dir
(STATE_DIR/instances/<id>/proc: made before views moved to /run, or by an
agent with ``--view-dir state``) keeps it there until it is deleted, because
its container's bind mounts point there.

The container's cgroup files are kept open between refreshes (cgroups.Cgroup
``keep_open``), closed when its PID 1 changes or the instance is forgotten;
DOCKYARD_KEEP_CGROUP_FILES=0 opens them each time (bench.procview's baseline).
"""

from __future__ import annotations

import collections
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from dockyard import cgroups
from dockyard.procview import render
from dockyard.procview.loadavg import SAMPLE_SECONDS, LoadAvg

TARGETS = {
    "meminfo": "/proc/meminfo",
    "cpuinfo": "/proc/cpuinfo",
    "stat": "/proc/stat",
    "uptime": "/proc/uptime",
    "loadavg": "/proc/loadavg",
    "swaps": "/proc/swaps",
    "diskstats": "/proc/diskstats",
    "cpu-online": "/sys/devices/system/cpu/online",
}
VIEW_TARGET = "/run/dockyard"
SAMPLES_KEPT = 720  # an hour of load average samples
# walking a container's writable layer is not free; tests shorten it
DISK_SECONDS = float(os.environ.get("DOCKYARD_DISK_SECONDS", "30"))
KEEP_CGROUP_FILES = os.environ.get("DOCKYARD_KEEP_CGROUP_FILES", "1") != "0"
RUN_ROOT = Path("/run/dockyard-agent")
_views_root: Path | None = None  # None: under each instance's state dir (place_views)


def default_views_root(state_dir: Path) -> Path:
    """Where an agent with ``state_dir`` keeps its views by default: a tmpfs, one
    directory per state dir (several agents of a lab share one machine)."""
    return RUN_ROOT / str(state_dir.absolute()).lstrip("/") / "views"


def place_views(root: Path | None) -> None:
    """From now on view directories are made at ROOT/<instance id> (None: at
    STATE_DIR/instances/<id>/proc). Set once, by the agent's command line."""
    global _views_root
    _views_root = root


def files(instance_dir: Path) -> dict[str, Path]:
    """Target in the container -> file on the host."""
    return {target: view_dir(instance_dir) / name for name, target in TARGETS.items()}


def tidy_views() -> None:
    """After: the views root and its parents up to /run/dockyard-agent are gone if they
    held nothing (an agent stopping with no instance leaves nothing under /run)."""
    if _views_root is None:
        return
    for d in (_views_root, *_views_root.parents):
        if not d.is_relative_to(RUN_ROOT):
            break
        try:
            d.rmdir()
        except OSError:
            break  # views of instances, another agent's, or a --view-dir elsewhere


def view_dir(instance_dir: Path) -> Path:
    """The instance's view directory: under its state dir when one is there (its
    container mounts it) or no views root is set, else in the views root."""
    beside = instance_dir / "proc"
    if _views_root is None or beside.is_dir():
        return beside
    return _views_root / instance_dir.name


def write_keys(instance_dir: Path, keys: list[str]) -> None:
    """root's authorized keys, read by the image's sshd from /run/dockyard."""
    d = view_dir(instance_dir)
    d.mkdir(parents=True, exist_ok=True)
    write_in_place(d / "authorized_keys", "".join(k.strip() + "\n" for k in keys), 0o644)


def write_in_place(path: Path, text: str, mode: int = 0o444) -> None:
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


class ViewWriter(Protocol):
    """What the agent needs from the /proc view writer (``ProcView``; ``FakeViews``)."""

    def prepare(self, instance_dir: Path, memory_mb: int, swap_mb: int, cpus: list[int]) -> None:
        """Before the container exists: the view files exist with figures from the
        flavor (bind sources must exist), in ``view_dir(instance_dir)``. Already
        there: every file rewritten."""
        ...

    def refresh(
        self, instance_id: str, instance_dir: Path, pid: int, started_at: str, swap_mb: int
    ) -> None:
        """After: the view files show the running container's cgroup figures now (a
        new ``started_at`` starts a new load average). Container gone: OSError or
        ValueError, and the files keep their last figures."""
        ...

    def refresh_disk(
        self, instance_id: str, instance_dir: Path, writable_dir: str, disk_gb: int
    ) -> None:
        """After: the view's ``disk`` file says the root disk's size and use, at most
        every DISK_SECONDS. No ``writable_dir``: no-op."""
        ...

    def forget(self, instance_id: str) -> None:
        """After: nothing of the instance is remembered in memory, no file of its
        cgroup is held open, and a view directory in the views root is gone (one
        under the state dir goes with the store's). Unknown instance: no-op."""
        ...


class FakeViews:
    """In memory, for unit tests: which instances have a view and how often it was drawn.

    ``prepare`` writes empty files where the real writer puts the view (they are
    bind sources, so the worker checks they exist)."""

    def __init__(self) -> None:
        self.prepared: dict[str, int] = {}  # instance id -> memory_mb of the last prepare
        self.refreshed: dict[str, int] = {}  # instance id -> refreshes
        self.disk_refreshed: dict[str, int] = {}

    def prepare(self, instance_dir: Path, memory_mb: int, swap_mb: int, cpus: list[int]) -> None:
        view_dir(instance_dir).mkdir(parents=True, exist_ok=True)
        for path in files(instance_dir).values():
            path.touch()
        self.prepared[instance_dir.name] = memory_mb

    def refresh(
        self, instance_id: str, instance_dir: Path, pid: int, started_at: str, swap_mb: int
    ) -> None:
        self.refreshed[instance_id] = self.refreshed.get(instance_id, 0) + 1

    def refresh_disk(
        self, instance_id: str, instance_dir: Path, writable_dir: str, disk_gb: int
    ) -> None:
        if writable_dir:
            self.disk_refreshed[instance_id] = self.disk_refreshed.get(instance_id, 0) + 1

    def forget(self, instance_id: str) -> None:
        self.prepared.pop(instance_id, None)
        self.refreshed.pop(instance_id, None)
        self.disk_refreshed.pop(instance_id, None)


@dataclass
class _Tracked:
    """What the agent remembers of one container's view between refreshes."""

    started_at: str = ""  # the container start the load average belongs to
    load: LoadAvg = field(default_factory=LoadAvg)
    sampled_at: float = 0.0
    running: int = 0  # tasks in R at the last sample
    samples: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=SAMPLES_KEPT)
    )
    pid: int = 0
    cgroup: cgroups.Cgroup | None = None  # of ``pid``
    disk_at: float = -1e9
    written: dict[str, str] = field(default_factory=dict)  # file -> text: skip unchanged


class ProcView:
    """Renders and refreshes the view of every running container."""

    def __init__(
        self,
        proc: Path = Path("/proc"),
        keep_open: bool = KEEP_CGROUP_FILES,
        fs: Path = Path("/sys/fs/cgroup"),
    ) -> None:
        self.proc, self.keep_open, self.fs = proc, keep_open, fs
        self._tracked: dict[str, _Tracked] = {}  # instance id -> its state
        # static layouts read once; /proc/stat's non-CPU lines at most once a second
        self._host_cpuinfo = (proc / "cpuinfo").read_text()
        self._host_meminfo = (proc / "meminfo").read_text()
        self._host_stat, self._host_stat_at = "", 0.0
        self._host_disks, self._host_disks_at = "", -1e9
        self._cpuinfos: dict[tuple[int, ...], str] = {}  # cpus -> rendered /proc/cpuinfo

    def _of(self, instance_id: str) -> _Tracked:
        return self._tracked.setdefault(instance_id, _Tracked())

    def prepare(self, instance_dir: Path, memory_mb: int, swap_mb: int, cpus: list[int]) -> None:
        """Files with sane content before the container exists (bind sources must)."""
        view_dir(instance_dir).mkdir(parents=True, exist_ok=True)
        self._of(instance_dir.name).written.clear()  # write every file, whatever we remember
        mem = render.MemoryFigures(
            limit=memory_mb * 2**20,
            usage=0,
            cache=0,
            inactive_file=0,
            shmem=0,
            swap_limit=swap_mb * 2**20,
        )
        self._write(instance_dir, mem, cpus, [], 0.0, "0.00 0.00 0.00 0/0 0\n", [])

    def refresh(
        self, instance_id: str, instance_dir: Path, pid: int, started_at: str, swap_mb: int
    ) -> None:
        cg = self.cgroup_of(instance_id, pid)
        mem = cgroups.memory_stat(cg)
        usage, limit = cgroups.usage_and_limit(cg)
        figures = render.MemoryFigures(
            limit=limit or 0,
            usage=usage,
            cache=mem.get("cache", 0),
            inactive_file=mem.get("inactive_file", 0),
            shmem=mem.get("shmem", 0),
            swap_limit=swap_mb * 2**20,
            swap_used=mem.get("swap", 0),
        )
        uptime = max(0.0, time.time() - epoch(started_at))
        cpuset = render.expand(cgroups.cpuset(cg))
        cpus = render.visible_cpus(cpuset, cgroups.cpu_cap(cg))
        self._write(
            instance_dir,
            figures,
            cpus,
            spread(cgroups.cpu_percpu_ns(cg), cpuset, cpus),
            uptime,
            self._loadavg(instance_id, instance_dir, started_at, cg),
            [render.DiskIo(**vars(d)) for d in cgroups.io(cg)],
        )

    def cgroup_of(self, instance_id: str, pid: int) -> cgroups.Cgroup:
        """The container's cgroup, looked up again only when its PID 1 changes (the
        files of the old one closed)."""
        t = self._of(instance_id)
        if t.cgroup is None or t.pid != pid:
            if t.cgroup is not None:
                t.cgroup.close()
            t.pid, t.cgroup = pid, cgroups.of_pid(pid, self.proc, self.fs, self.keep_open)
        return t.cgroup

    def open_files(self) -> int:
        """Descriptors held open for cgroup files, over every instance."""
        return sum(t.cgroup.kept() for t in self._tracked.values() if t.cgroup is not None)

    def refresh_disk(
        self, instance_id: str, instance_dir: Path, writable_dir: str, disk_gb: int
    ) -> None:
        """What the container wrote to its root fs, and its size: for df (every 30 s)."""
        t, now = self._of(instance_id), time.monotonic()
        if not writable_dir or now - t.disk_at < DISK_SECONDS:
            return
        t.disk_at = now
        st = os.statvfs(writable_dir)
        size = disk_gb * 2**30 if disk_gb else st.f_blocks * st.f_frsize
        view_dir(instance_dir).mkdir(parents=True, exist_ok=True)
        write_in_place(view_dir(instance_dir) / "disk", f"{size} {du(Path(writable_dir))}\n")

    def _loadavg(
        self, instance_id: str, instance_dir: Path, started_at: str, cg: cgroups.Cgroup
    ) -> str:
        t = self._of(instance_id)
        if t.started_at != started_at:  # a new start: a new load average
            t.started_at, t.load, t.sampled_at, t.running = started_at, LoadAvg(), 0.0, 0
            t.samples.clear()
        tids = cgroups.threads(cg)
        now = time.monotonic()
        if now - t.sampled_at >= SAMPLE_SECONDS:  # task states only when sampling
            states = [_state(self.proc, tid) for tid in tids]
            active = sum(s in ("R", "D") for s in states)
            t.load.sample(active)
            t.sampled_at, t.running = now, sum(s == "R" for s in states)
            # the samples behind the load average, so anyone can check it (last hour)
            t.samples.append((time.time(), active))
            text = "".join(f"{at:.3f} {n}\n" for at, n in t.samples)
            write_in_place(view_dir(instance_dir) / "loadavg-samples", text)
        return t.load.render(t.running, len(tids), max(tids, default=0))

    def forget(self, instance_id: str) -> None:
        t = self._tracked.pop(instance_id, None)
        if t is not None and t.cgroup is not None:
            t.cgroup.close()
        if _views_root is not None:
            shutil.rmtree(_views_root / instance_id, ignore_errors=True)

    def _cpuinfo(self, cpus: list[int]) -> str:
        key = tuple(cpus)
        if key not in self._cpuinfos:
            self._cpuinfos[key] = render.cpuinfo(self._host_cpuinfo, cpus)
        return self._cpuinfos[key]

    def _disks(self) -> str:
        if time.monotonic() - self._host_disks_at >= 60.0:  # only names come from here
            self._host_disks = (self.proc / "diskstats").read_text()
            self._host_disks_at = time.monotonic()
        return self._host_disks

    def _stat(self) -> str:
        if time.monotonic() - self._host_stat_at >= 1.0:
            self._host_stat = (self.proc / "stat").read_text()
            self._host_stat_at = time.monotonic()
        return self._host_stat

    def _write(
        self,
        d: Path,
        mem: render.MemoryFigures,
        cpus: list[int],
        percpu: list[int],
        uptime: float,
        loadavg: str,
        ios: list[render.DiskIo],
    ) -> None:
        idle = max(0.0, uptime * len(cpus) - sum(percpu[c] for c in cpus if c < len(percpu)) / 1e9)
        out = {
            "meminfo": render.meminfo(mem, self._host_meminfo),
            "cpuinfo": self._cpuinfo(cpus),
            "stat": render.stat(self._stat(), percpu, cpus, uptime),
            "uptime": render.uptime(uptime, idle),
            "loadavg": loadavg,
            "swaps": render.swaps(mem.swap_limit, mem.swap_used),
            "diskstats": render.diskstats(self._disks(), ios),
            "cpu-online": render.cpus_online(list(range(len(cpus))) or [0]),
        }
        written, where = self._of(d.name).written, view_dir(d)
        for name, text in out.items():
            if written.get(name) != text:
                write_in_place(where / name, text)
                written[name] = text


def spread(percpu: list[int], cpuset: list[int], shown: list[int]) -> list[int]:
    """Per-CPU time (by host CPU) with the time of CPUs not shown spread over those shown."""
    if shown == cpuset or not shown:
        return percpu
    total = sum(percpu[c] for c in cpuset if c < len(percpu))
    out = [0] * (max(shown) + 1)
    for c in shown:
        out[c] = total // len(shown)
    return out


def du(top: Path) -> int:
    """Bytes of disk used under a directory (allocated blocks, hard links once)."""
    total, seen = 0, set()
    for root, dirs, names in os.walk(top):
        for name in dirs + names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue  # removed meanwhile
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def _state(proc: Path, tid: int) -> str:
    try:
        text = (proc / str(tid) / "stat").read_text()
    except OSError:
        return "X"
    return text.rsplit(")", 1)[1].split()[0]


def epoch(started_at: str) -> float:
    """Docker's StartedAt (RFC 3339 with nanoseconds) as epoch seconds."""
    head, _, frac = started_at.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + float("0." + (frac[:6] or "0"))
