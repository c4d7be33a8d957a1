"""Debian's lxcfs on a private mount point, to compare /proc views side by side."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dockyard import cgroups
from tests.integration.cluster import run, stop_pid, wait_for

# what lxcfs serves, and where a container sees each file
FILES = {
    "proc/meminfo": "/proc/meminfo",
    "proc/cpuinfo": "/proc/cpuinfo",
    "proc/stat": "/proc/stat",
    "proc/uptime": "/proc/uptime",
    "proc/loadavg": "/proc/loadavg",
    "proc/swaps": "/proc/swaps",
    "proc/diskstats": "/proc/diskstats",
    "sys/devices/system/cpu/online": "/sys/devices/system/cpu/online",
}


@contextmanager
def lxcfs(root: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """lxcfs -f -l (load average on) at root/lxcfs; unmounted and stopped after."""
    if shutil.which("lxcfs") is None:
        raise RuntimeError("lxcfs is not installed (see .ci/run)")
    mnt = root / "lxcfs"
    mnt.mkdir()
    log = (root / "lxcfs.log").open("ab")
    proc = subprocess.Popen(
        ["lxcfs", "-f", "-l", "-p", str(root / "lxcfs.pid"), str(mnt)],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        wait_for(lambda: (mnt / "proc" / "meminfo").exists(), 15, "lxcfs to mount")
        yield mnt, proc
    finally:
        stop_pid(proc)
        run("umount", "-l", str(mnt), check=False)


def run_under_lxcfs(pid: int, command: str, inside: str = "/lxcfs") -> str:
    """Run a shell command in the container of ``pid`` with lxcfs's files bound
    over /proc, the way an lxcfs user mounts them.

    A container may not mount, so this starts on the host: joins the
    container's cgroups (lxcfs answers for the reader's cgroup, and the cpuset
    sets the affinity nproc reads), enters its mount and PID namespaces, and
    binds the files in a private mount namespace of its own.
    """
    dirs = sorted({str(d) for d in cgroups.of_pid(pid).dirs.values()})
    join = "; ".join(f"echo $$ > {d}/tasks" for d in dirs)
    binds = "; ".join(f"mount --bind {inside}/{src} {dst}" for src, dst in FILES.items())
    inner = f"{binds}; {command}"
    script = f"{join}; exec nsenter -t {pid} -m -p -- unshare -m sh -c {shlex.quote(inner)}"
    return run("sh", "-c", script).stdout
