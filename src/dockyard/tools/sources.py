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
from dockyard.procview.render import MemoryFigures, expand, visible_cpus

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
        return cls(
            total=m.limit,
            used=m.limit - m.available,
            free=max(0, m.limit - m.usage),
            shared=m.shmem,
            cache=max(0, m.cache),
            available=m.available,
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
        usage, limit = cgroups.usage_and_limit(self.cg)
        stat = cgroups.memory_stat(self.cg)
        limit = limit if limit is not None else self._host_memory()
        swap_limit = cgroups.swap_limit(self.cg, limit)
        return Memory.of(
            MemoryFigures(
                limit=limit,
                usage=usage,
                cache=stat.get("cache", 0),
                inactive_file=stat.get("inactive_file", 0),
                shmem=stat.get("shmem", 0),
                swap_limit=swap_limit,
                swap_used=min(swap_limit, stat.get("swap", 0)),
            )
        )

    def _host_memory(self) -> int:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

    def cpus(self) -> int:
        """CPUs the container may use: its cpuset, or its CPU cap rounded up."""
        cpuset = expand(cgroups.cpuset(self.cg))
        return len(visible_cpus(cpuset, cgroups.cpu_cap(self.cg))) or os.cpu_count() or 1

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds the container has used."""
        return cgroups.cpu_times(self.cg)

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
