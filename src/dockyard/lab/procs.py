"""Processes, waits and cgroups of the lab: everything is found again by PID and by
a marker (a path only the lab uses) in its command line, never by a broad name."""

from __future__ import annotations

import functools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
CGROUP_FS = Path("/sys/fs/cgroup")


class LabError(Exception):
    """What went wrong, in words that say what to change."""


def run(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
    return proc


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a process about to be started."""
    return free_ports(1, host)


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive ports free on ``host`` (``dockyard up`` puts
    its registry and monitoring next to its API's port).

    Taken below the kernel's ephemeral range: a port from bind(0) is one the kernel
    also hands to outgoing connections, so between this check and the service's own
    bind a client could take it (in CI `dockyard up`'s registry lost its port + 1 so)."""
    low = _ephemeral_low()
    if low - count <= 1024 + count:  # the whole range is ephemeral: take from above it
        low = 65536 - count
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(max(1024, low - 12000), low - count)
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                held.append(socket.socket())
                held[-1].bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise LabError(f"no {count} consecutive free ports on {host} below {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int | None, marker: str) -> bool:
    """``pid`` runs (not a zombie) and its command line holds ``marker``: a PID the
    kernel gave to someone else since is not ours."""
    if not pid:
        return False
    _reap(pid)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        return False
    for _ in range(20):  # empty while the process is between two execve calls (nsenter)
        line = cmdline(pid)
        if line:
            return marker in line
        time.sleep(0.005)
    return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (started by an earlier `dockyard lab` command)


def stop_pid(pid: int | None, marker: str, timeout: float = 20) -> None:
    """After: ``pid`` (if it was ours) has exited. SIGTERM, then SIGKILL."""
    if pid is None or not alive(pid, marker):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid, marker):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.05)


def stop_proc(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """After: the child ``proc`` has exited. ``sig``, then SIGKILL after ``timeout`` s."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_marked(marker: str) -> list[int]:
    """SIGKILL every process whose command line holds ``marker`` (containerd shims and
    instances a dead dockerd left); returns their PIDs."""
    me, killed = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and marker in cmdline(int(entry.name)):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed


def cgroup_dirs(name: str, fs: Path = CGROUP_FS) -> list[Path]:
    """Every hierarchy's directory ``name`` (a dockerd's --cgroup-parent)."""
    return [p for p in fs.glob(f"*/{name}") if p.is_dir()] + (
        [fs / name] if (fs / name).is_dir() else []
    )


def kill_cgroup(name: str, fs: Path = CGROUP_FS) -> None:
    """SIGKILL every process left in the cgroup ``name`` (instances of a dockerd that
    stopped with live-restore on)."""
    for top in cgroup_dirs(name, fs):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids = procs.read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def remove_cgroups(name: str, timeout: float = 10, fs: Path = CGROUP_FS) -> list[Path]:
    """Remove the cgroup ``name`` and what is below it in every hierarchy, retrying for
    ``timeout`` s (a container's cgroup goes asynchronously after its processes);
    returns what is left."""
    deadline = time.monotonic() + timeout
    while True:
        kill_cgroup(name, fs)
        for top in cgroup_dirs(name, fs):
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True) + [top]:
                try:
                    d.rmdir()
                except OSError:
                    pass  # still in use: the next round
        left = cgroup_dirs(name, fs)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p.startswith(prefix) or p == prefix.rstrip("/")]


def unmount_under(path: Path) -> None:
    for point in sorted(mounts_under(path), key=len, reverse=True):
        run("umount", "-l", point, check=False)


@functools.cache
def cli_command() -> list[str]:
    """The `dockyard` command that installing the package put beside this interpreter
    (what a user types; ``python -m`` adds runpy's ~6 ms to every command), else the
    module through this interpreter (a source tree nobody installed)."""
    module = [sys.executable, "-m", "dockyard.cli.main"]
    if not sys.executable:
        return module
    me = Path(sys.executable)
    script = me.with_name("dockyard")
    try:
        with script.open("rb") as f:
            words = f.readline().decode(errors="replace").removeprefix("#!").split()
    except OSError:
        return module
    runs = Path(words[0]) if words else None  # its interpreter: this one, in this directory
    if runs is not None and runs.parent == me.parent and runs.resolve() == me.resolve():
        return [str(script)]
    return module


def dockyard(
    *args: str, env: dict[str, str], check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`dockyard ARGS` as a user types it (this interpreter's CLI, the given environment);
    LabError when it fails and ``check``."""
    r = subprocess.run(
        [*cli_command(), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if check and r.returncode != 0:
        raise LabError(f"dockyard {' '.join(args)} failed: {r.stderr}")
    return r
