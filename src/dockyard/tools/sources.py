"""What a container can learn about itself, for the container tools.

Memory, CPUs and CPU time come from the container's own cgroup, which Docker
mounts read-only at /sys/fs/cgroup. The load average and the uptime come
from the agent's view directory, bind-mounted read-only at /run/dockyard;
without it (a container Dockyard did not start) the tools say they fall back
to the kernel's figures, which are the host's.

Standard library only: these modules run inside the image's python3.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from dockyard import cgroups
from dockyard.procview.render import MemoryFigures

VIEW = Path("/run/dockyard")


@dataclass(frozen=True)
class Memory:
    total: int
    used: int  # total - available, as procps 4 counts it: the working set
    free: int
    shared: int
    cache: int
    available: int
    swap_total: int
    swap_used: int

    @classmethod
    def of(cls, m: MemoryFigures) -> Memory:
        available = max(0, m.limit - max(0, m.usage - m.inactive_file))
        return cls(
            total=m.limit,
            used=m.limit - available,
            free=max(0, m.limit - m.usage),
            shared=m.shmem,
            cache=max(0, m.cache),
            available=available,
            swap_total=m.swap_limit,
            swap_used=m.swap_used,
        )


@dataclass(frozen=True)
class Load:
    one: float
    five: float
    fifteen: float
    running: int
    total: int
    from_agent: bool


class Container:
    """The calling process's container; every property reads afresh."""

    def __init__(
        self,
        proc: Path = Path("/proc"),
        fs: Path = Path("/sys/fs/cgroup"),
        view: Path = VIEW,
    ) -> None:
        self.proc, self.view = proc, view
        self.cg = cgroups.own(proc, fs)

    def memory(self) -> Memory:
        usage = cgroups.memory(self.cg)
        stat = cgroups.memory_stat(self.cg)
        limit = usage.limit if usage.limit is not None else self._host_memory()
        swap_limit = self._swap_limit(limit)
        return Memory.of(
            MemoryFigures(
                limit=limit,
                usage=usage.usage,
                cache=stat.get("cache", 0),
                inactive_file=stat.get("inactive_file", 0),
                shmem=stat.get("shmem", 0),
                swap_limit=swap_limit,
                swap_used=min(swap_limit, stat.get("swap", 0)),
            )
        )

    def _swap_limit(self, limit: int) -> int:
        try:
            both = int(self.cg.file("memory", "memory.memsw.limit_in_bytes").read_text())
        except (OSError, ValueError):
            return 0
        return 0 if both >= 2**62 else max(0, both - limit)

    def _host_memory(self) -> int:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

    def cpus(self) -> int:
        """CPUs the container may use: its cpuset, or its CPU cap rounded up."""
        n = len(_expand(cgroups.cpuset(self.cg))) or os.cpu_count() or 1
        cap = cgroups.cpu(self.cg).quota_cores
        return max(1, min(n, -int(-cap // 1))) if cap else n

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds the container has used."""
        if self.cg.version == 1:
            stat = _kv(self.cg.file("cpuacct", "cpuacct.stat"))
            hz = os.sysconf("SC_CLK_TCK")
            return stat.get("user", 0) / hz, stat.get("system", 0) / hz
        stat = _kv(self.cg.file("cpu", "cpu.stat"))
        return stat.get("user_usec", 0) / 1e6, stat.get("system_usec", 0) / 1e6

    def load(self) -> Load:
        path = self.view / "loadavg"
        from_agent = path.is_file()
        text = (path if from_agent else self.proc / "loadavg").read_text().split()
        running, _, total = text[3].partition("/")
        return Load(
            float(text[0]), float(text[1]), float(text[2]), int(running), int(total), from_agent
        )

    def uptime(self) -> float:
        """Seconds since the container started (its PID 1's start time)."""
        stat = (self.proc / "1" / "stat").read_text().rsplit(")", 1)[1].split()
        started = int(stat[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)

    def disk(self) -> tuple[int, int] | None:
        """(size, used) bytes of the root filesystem as the agent measured it, if it did."""
        try:
            size, used = (self.view / "disk").read_text().split()[:2]
            return int(size), int(used)
        except (OSError, ValueError):
            return None


def _expand(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.strip().split(",")):
        a, _, b = part.partition("-")
        out += range(int(a), int(b or a) + 1)
    return out


def _kv(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def users(utmp: Path = Path("/var/run/utmp")) -> int:
    """Logged-in sessions (USER_PROCESS records in utmp), as uptime(1) counts them."""
    try:
        data = utmp.read_bytes()
    except OSError:
        return 0
    size = 384  # struct utmp on Linux x86_64 and aarch64
    return sum(
        int.from_bytes(data[i : i + 2], "little") == 7 for i in range(0, len(data) - size + 1, size)
    )
