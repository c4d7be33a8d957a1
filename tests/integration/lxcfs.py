"""lxcfs for the tests: the lab's (``dockyard.lab.lxcfs``) and a way to read it from
inside a container."""

from __future__ import annotations

import shlex

from dockyard import cgroups
from dockyard.lab.lxcfs import FILES, lxcfs
from dockyard.lab.procs import run

__all__ = ["FILES", "lxcfs", "run_under_lxcfs"]


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
