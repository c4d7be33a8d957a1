"""Render /proc files for a container from its cgroup figures. Pure functions."""

from __future__ import annotations

import math
from dataclasses import dataclass

USER_HZ = 100


@dataclass(frozen=True)
class MemoryFigures:
    limit: int  # bytes
    usage: int  # bytes, as memory.usage_in_bytes / memory.current
    cache: int  # page cache (total_cache / file)
    inactive_file: int  # reclaimable part of the cache
    shmem: int
    swap_limit: int = 0  # bytes of swap allowed on top of memory
    swap_used: int = 0

    @property
    def working_set(self) -> int:
        """usage - inactive_file, as docker stats and cAdvisor count it."""
        return max(0, self.usage - self.inactive_file)

    @property
    def available(self) -> int:
        return max(0, self.limit - self.working_set)


def meminfo(m: MemoryFigures, host_meminfo: str) -> str:
    """MemTotal = the limit; MemFree = limit - usage; MemAvailable as the working set
    (usage - inactive_file) leaves it, the way docker stats and cAdvisor count it.
    Lines the container has no figure for keep the host's layout with 0."""
    kb = {
        "MemTotal": m.limit,
        "MemFree": max(0, m.limit - m.usage),
        "MemAvailable": m.available,
        "Buffers": 0,
        "Cached": max(0, m.cache - m.shmem),
        "Shmem": m.shmem,
        "SwapTotal": m.swap_limit,
        "SwapFree": max(0, m.swap_limit - m.swap_used),
        "SwapCached": 0,
        "Active(file)": max(0, m.cache - m.inactive_file - m.shmem),
        "Inactive(file)": m.inactive_file,
    }
    out = []
    for line in host_meminfo.splitlines():
        key = line.split(":", 1)[0]
        if key in kb:
            out.append(f"{key + ':':<16}{kb[key] // 1024:>8} kB")
        elif line.endswith(" kB"):
            out.append(f"{key + ':':<16}{0:>8} kB")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def cpus_online(cpus: list[int]) -> str:
    """/sys/devices/system/cpu/online for the container's CPUs, e.g. '0-1'."""
    return compress(cpus) + "\n"


def expand(text: str) -> list[int]:
    """'0-2,5' -> [0, 1, 2, 5] (the inverse of compress)."""
    out: list[int] = []
    for part in filter(None, text.strip().split(",")):
        a, _, b = part.partition("-")
        out += range(int(a), int(b or a) + 1)
    return out


def visible_cpus(cpuset: list[int], cap: float | None) -> list[int]:
    """The CPUs a container is shown: its cpuset, or as many as its cap rounded up."""
    if cap is None or not cpuset:
        return cpuset
    return cpuset[: max(1, math.ceil(cap - 1e-9))]


def compress(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    ranges: list[list[int]] = []
    for c in sorted(cpus):
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)


def cpuinfo(host_cpuinfo: str, cpus: list[int]) -> str:
    """The host's /proc/cpuinfo blocks of the container's CPUs, renumbered from 0."""
    blocks = [b for b in host_cpuinfo.strip().split("\n\n") if b.strip()]
    by_id = {}
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("processor"):
                by_id[int(line.split(":")[1])] = block
    out = []
    for n, cpu in enumerate(sorted(c for c in cpus if c in by_id)):
        lines = by_id[cpu].splitlines()
        lines = [f"processor\t: {n}" if ln.startswith("processor") else ln for ln in lines]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n\n"


def stat(host_stat: str, usage_ns_per_cpu: list[int], cpus: list[int], uptime_s: float) -> str:
    """/proc/stat with the container's CPU time per CPU (user) and the rest idle.

    The cgroup knows only total time per CPU, so it is shown as user time;
    idle is the container's uptime on that CPU minus what it used."""
    ticks = [
        usage_ns_per_cpu[c] * USER_HZ // 10**9 if c < len(usage_ns_per_cpu) else 0 for c in cpus
    ]
    total_up = int(uptime_s * USER_HZ)
    idle = [max(0, total_up - t) for t in ticks]
    lines = [f"cpu  {sum(ticks)} 0 0 {sum(idle)} 0 0 0 0 0 0"]
    lines += [
        f"cpu{n} {t} 0 0 {i} 0 0 0 0 0 0" for n, (t, i) in enumerate(zip(ticks, idle, strict=True))
    ]
    rest = [ln for ln in host_stat.splitlines() if not ln.startswith("cpu")]
    return "\n".join(lines + rest) + "\n"


def uptime(uptime_s: float, idle_s: float) -> str:
    return f"{uptime_s:.2f} {idle_s:.2f}\n"


def swaps(swap_limit: int, swap_used: int) -> str:
    header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
    if not swap_limit:
        return header
    return header + f"none\t\t\t\t\tvirtual\t\t{swap_limit // 1024}\t\t{swap_used // 1024}\t\t0\n"


@dataclass(frozen=True)
class DiskIo:
    device: str  # MAJ:MIN
    read_bytes: int
    write_bytes: int
    reads: int
    writes: int


def diskstats(host_diskstats: str, ios: list[DiskIo]) -> str:
    """/proc/diskstats lines of the devices the container did IO on, with its
    own request and sector counts; the fields the cgroup does not count
    (merges, times, queue) are 0. Same number of fields as the host's lines."""
    names, width = {}, 14
    for line in host_diskstats.splitlines():
        f = line.split()
        if len(f) >= 4:
            names[f"{f[0]}:{f[1]}"] = f[2]
            width = len(f)
    out = []
    for io in ios:
        name = names.get(io.device)
        if name is None:
            continue
        major, minor = io.device.split(":")
        counts = [io.reads, 0, io.read_bytes // 512, 0, io.writes, 0, io.write_bytes // 512]
        counts += [0] * (width - 3 - len(counts))
        out.append(f"{major:>4} {minor:>7} {name} " + " ".join(str(c) for c in counts))
    return "\n".join(out) + ("\n" if out else "")
