"""top(1) for a machine container: one-shot (-b -n 1) and interactive.

The summary comes from the container's cgroup (CPU time, memory against
the limit, CPUs of its cpuset or cap) and the agent's load average; the
process list from /proc, which the PID namespace limits to the container.
Needed where a top build reads sysinfo(2) or the host's /proc/stat.
"""

from __future__ import annotations

import argparse
import os
import pwd
import select
import shutil
import sys
import termios
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from dockyard.tools.sources import Container, users
from dockyard.tools.uptime import classic, load_text

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Proc:
    pid: int
    user: str
    state: str
    priority: int
    nice: int
    virt: int
    res: int
    shr: int
    ticks: int
    command: str


def processes(proc: Path = Path("/proc")) -> dict[int, Proc]:
    out = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            p = _read_proc(entry)
            if p is not None:
                out[p.pid] = p
    return out


def _read_proc(d: Path) -> Proc | None:
    try:
        stat = (d / "stat").read_text()
        statm = (d / "statm").read_text().split()
        uid = d.stat().st_uid
    except OSError:
        return None  # exited while we looked
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    f = stat[stat.rindex(")") + 2 :].split()
    return Proc(
        pid=int(d.name),
        user=_user(uid),
        state=f[0],
        priority=int(f[15]),
        nice=int(f[16]),
        virt=int(f[20]),
        res=int(statm[1]) * PAGE,
        shr=int(statm[2]) * PAGE,
        ticks=int(f[11]) + int(f[12]),
        command=comm,
    )


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name[:8]
    except KeyError:
        return str(uid)


@dataclass
class Sample:
    at: float
    cpu: tuple[float, float]
    procs: dict[int, Proc]


def sample(c: Container) -> Sample:
    return Sample(time.monotonic(), c.cpu_seconds(), processes())


def frame(c: Container, before: Sample, now: Sample, rows: int | None = None) -> str:
    elapsed = max(1e-3, now.at - before.at)
    ncpu = c.cpus()
    us = 100 * (now.cpu[0] - before.cpu[0]) / (elapsed * ncpu)
    sy = 100 * (now.cpu[1] - before.cpu[1]) / (elapsed * ncpu)
    idle = max(0.0, 100 - us - sy)
    mem = c.memory()
    states = [p.state for p in now.procs.values()]
    n_users = users()
    lines = [
        f"top - {time.strftime('%H:%M:%S')} {classic(c.uptime())},  "
        f"{n_users} user{'s' if n_users != 1 else ''},  {load_text(c.load())}",
        f"Tasks: {len(states):>3} total, {states.count('R'):>3} running, "
        f"{sum(s in 'SI' for s in states):>3} sleeping, {sum(s in 'Tt' for s in states):>3} "
        f"stopped, {states.count('Z'):>3} zombie",
        f"%Cpu(s): {us:4.1f} us, {sy:4.1f} sy,  0.0 ni, {idle:4.1f} id   ({ncpu} CPUs)",
        f"MiB Mem : {mem.total / 2**20:8.1f} total, {mem.free / 2**20:8.1f} free, "
        f"{mem.used / 2**20:8.1f} used, {mem.cache / 2**20:8.1f} buff/cache",
        f"MiB Swap: {mem.swap_total / 2**20:8.1f} total, "
        f"{(mem.swap_total - mem.swap_used) / 2**20:8.1f} free, "
        f"{mem.swap_used / 2**20:8.1f} used. {mem.available / 2**20:8.1f} avail Mem",
        "",
        f"{'PID':>7} {'USER':<8} {'PR':>3} {'NI':>3} {'VIRT':>8} {'RES':>7} {'SHR':>7} S "
        f"{'%CPU':>5} {'%MEM':>5} {'TIME+':>9} COMMAND",
    ]
    table = []
    for p in now.procs.values():
        old = before.procs.get(p.pid)
        ticks = p.ticks - (old.ticks if old else 0)
        table.append((100 * ticks / HZ / elapsed, p))
    table.sort(key=lambda t: (-t[0], t[1].pid))
    for pct, p in table[: rows if rows else None]:
        lines.append(
            f"{p.pid:>7} {p.user:<8} {p.priority:>3} {p.nice:>3} {p.virt // 1024:>8} "
            f"{p.res // 1024:>7} {p.shr // 1024:>7} {p.state} {pct:5.1f} "
            f"{100 * p.res / mem.total:5.1f} {_time(p.ticks):>9} {p.command}"
        )
    return "\n".join(lines) + "\n"


def _time(ticks: int) -> str:
    hundredths = ticks * 100 // HZ
    minutes, rest = divmod(hundredths, 6000)
    return f"{minutes}:{rest // 100:02d}.{rest % 100:02d}"


def batch(c: Container, iterations: int, delay: float) -> None:
    before = sample(c)
    time.sleep(min(delay, 0.5))  # the first frame needs an interval too
    for i in range(iterations):
        now = sample(c)
        sys.stdout.write(frame(c, before, now) + "\n")
        sys.stdout.flush()
        before = now
        if i + 1 < iterations:
            time.sleep(delay)


def interactive(c: Container, iterations: int | None, delay: float) -> None:
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        before, shown = sample(c), 0
        wait = min(delay, 0.5)
        while iterations is None or shown < iterations:
            ready, _, _ = select.select([sys.stdin], [], [], wait)
            if ready and sys.stdin.read(1) in ("q", "Q"):
                break
            now = sample(c)
            rows = shutil.get_terminal_size().lines - 8
            sys.stdout.write("\x1b[H\x1b[2J" + frame(c, before, now, max(1, rows)))
            sys.stdout.flush()
            before, shown, wait = now, shown + 1, delay
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="top", description="processes of this container")
    p.add_argument("-b", "--batch", action="store_true", help="plain output, no terminal")
    p.add_argument("-n", "--iterations", type=int, help="frames to show, then exit")
    p.add_argument("-d", "--delay", type=float, default=3.0, help="seconds between frames")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.delay <= 0 or (a.iterations is not None and a.iterations < 1):
        p.error("-d and -n must be positive")
    c = Container()
    if a.batch or not sys.stdin.isatty():
        batch(c, a.iterations or 1, a.delay)
    else:
        interactive(c, a.iterations, a.delay)
    return 0
