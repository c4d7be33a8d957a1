"""The agent's side of the /proc view: files per container, refreshed in place.

    STATE_DIR/instances/<id>/proc/{meminfo,cpuinfo,stat,uptime,loadavg,swaps,cpu-online}
      bind-mounted at create over /proc/... and /sys/devices/system/cpu/online

Files are rewritten in place (same inode: a bind mount pins the inode, so a
rename would never be seen). If the agent stops, readers keep reading the
last values; nothing in the read path can fail with ENOTCONN as lxcfs does.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

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
    "cpu-online": "/sys/devices/system/cpu/online",
}


def files(instance_dir: Path) -> dict[str, Path]:
    """Target in the container -> file on the host."""
    return {target: instance_dir / "proc" / name for name, target in TARGETS.items()}


def write_in_place(path: Path, text: str) -> None:
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o444)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


class ProcView:
    """Renders and refreshes the view of every running container."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._loads: dict[str, tuple[str, LoadAvg, float]] = {}  # id -> (start, avg, last)
        # static layouts read once; /proc/stat's non-CPU lines at most once a second
        self._host_cpuinfo = (proc / "cpuinfo").read_text()
        self._host_meminfo = (proc / "meminfo").read_text()
        self._host_stat, self._host_stat_at = "", 0.0

    def prepare(self, instance_dir: Path, memory_mb: int, swap_mb: int, cpus: list[int]) -> None:
        """Files with sane content before the container exists (bind sources must)."""
        (instance_dir / "proc").mkdir(parents=True, exist_ok=True)
        mem = render.MemoryFigures(
            limit=memory_mb * 2**20,
            usage=0,
            cache=0,
            inactive_file=0,
            shmem=0,
            swap_limit=swap_mb * 2**20,
        )
        self._write(instance_dir, mem, cpus, [], 0.0, "0.00 0.00 0.00 0/0 0\n")

    def refresh(
        self, instance_id: str, instance_dir: Path, pid: int, started_at: str, swap_mb: int
    ) -> None:
        cg = cgroups.of_pid(pid, self.proc)
        mem = cgroups.memory_stat(cg)
        limit = cgroups.memory(cg)
        figures = render.MemoryFigures(
            limit=limit.limit or 0,
            usage=limit.usage,
            cache=mem.get("cache", 0),
            inactive_file=mem.get("inactive_file", 0),
            shmem=mem.get("shmem", 0),
            swap_limit=swap_mb * 2**20,
            swap_used=mem.get("swap", 0),
        )
        cpus = expand(cgroups.cpuset(cg))
        uptime = max(0.0, time.time() - _epoch(started_at))
        self._write(
            instance_dir,
            figures,
            cpus,
            cgroups.cpu_percpu_ns(cg),
            uptime,
            self._loadavg(instance_id, started_at, cg),
        )

    def _loadavg(self, instance_id: str, started_at: str, cg: cgroups.Cgroup) -> str:
        start, avg, last = self._loads.get(instance_id, (started_at, LoadAvg(), 0.0))
        if start != started_at:
            avg, last = LoadAvg(), 0.0
        tids = cgroups.threads(cg)
        now = time.monotonic()
        states = [_state(self.proc, t) for t in tids]
        running = sum(s == "R" for s in states)
        if now - last >= SAMPLE_SECONDS:
            avg.sample(sum(s in ("R", "D") for s in states))
            last = now
        self._loads[instance_id] = (started_at, avg, last)
        return avg.render(running, len(tids), max(tids, default=0))

    def forget(self, instance_id: str) -> None:
        self._loads.pop(instance_id, None)

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
    ) -> None:
        idle = max(0.0, uptime * len(cpus) - sum(percpu[c] for c in cpus if c < len(percpu)) / 1e9)
        out = {
            "meminfo": render.meminfo(mem, self._host_meminfo),
            "cpuinfo": render.cpuinfo(self._host_cpuinfo, cpus),
            "stat": render.stat(self._stat(), percpu, cpus, uptime),
            "uptime": render.uptime(uptime, idle),
            "loadavg": loadavg,
            "swaps": render.swaps(mem.swap_limit, mem.swap_used),
            "cpu-online": render.cpus_online(list(range(len(cpus))) or [0]),
        }
        for name, text in out.items():
            write_in_place(d / "proc" / name, text)


def expand(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5]."""
    out: list[int] = []
    for part in filter(None, text.strip().split(",")):
        a, _, b = part.partition("-")
        out += range(int(a), int(b or a) + 1)
    return out


def _state(proc: Path, tid: int) -> str:
    try:
        text = (proc / str(tid) / "stat").read_text()
    except OSError:
        return "X"
    return text.rsplit(")", 1)[1].split()[0]


def _epoch(started_at: str) -> float:
    """Docker's StartedAt (RFC 3339 with nanoseconds) as epoch seconds."""
    head, _, frac = started_at.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + float("0." + (frac[:6] or "0"))
