"""Debian's lxcfs on a private mount point, to compare /proc views side by side
(tests and bench/procview)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dockyard.lab.procs import LabError, run, stop_proc, wait_for

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
def lxcfs(root: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """lxcfs -f -l (load average on) at root/lxcfs; unmounted and stopped after."""
    if shutil.which("lxcfs") is None:
        raise LabError("lxcfs is not installed (scripts/packages.sh installs it)")
    mnt = root / "lxcfs"
    mnt.mkdir()
    log = (root / "lxcfs.log").open("ab")
    proc = subprocess.Popen(
        ["lxcfs", "-f", "-l", "-p", str(root / "lxcfs.pid"), str(mnt)],
        stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (mnt / "proc" / "meminfo").exists(), 15, "lxcfs to mount")
        yield mnt, proc
    finally:
        stop_proc(proc)
        run("umount", "-l", str(mnt), check=False)
