"""df(1) for a machine container.

The root filesystem is an overlay: statfs(2) on it answers for the host
filesystem under Docker's data root, shared by every container. The agent
measures what this container wrote (its upper directory) and its size limit
(the flavor's root disk where the host enforces one, else the shared
filesystem) into /run/dockyard/disk; df shows that for "/". Other mounts
(volumes, /dev/shm) are answered by statfs as usual.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from dockyard.tools.free import human
from dockyard.tools.sources import VIEW, Container

PSEUDO = {
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs",
    "fusectl", "bpf", "tracefs", "configfs", "pstore", "hugetlbfs", "autofs", "binfmt_misc",
}  # fmt: skip


@dataclass(frozen=True)
class Row:
    source: str
    size: int
    used: int
    avail: int
    target: str

    def percent(self) -> str:
        denom = self.used + self.avail
        return f"{-(-100 * self.used // denom)}%" if denom else "-"


def mounts(path: Path = Path("/proc/self/mounts"), view: Path = VIEW) -> list[tuple[str, str, str]]:
    """(source, target, fstype) of real filesystems, one per target (the last wins);
    not the agent's view directory, which is Dockyard's, not the user's."""
    seen: dict[str, tuple[str, str, str]] = {}
    for line in path.read_text().splitlines():
        source, target, fstype = line.split()[:3]
        target = target.replace("\\040", " ")
        if fstype not in PSEUDO and target != str(view) and not _is_file_mount(target):
            seen[target] = (source, target, fstype)
    return list(seen.values())


def _is_file_mount(target: str) -> bool:
    # /etc/hosts, the /proc view files...: bind mounts of single files, not filesystems
    try:
        return not os.path.isdir(target)
    except OSError:
        return True


def row(source: str, target: str, disk: tuple[int, int, int] | None) -> Row:
    if target == "/" and disk is not None:
        size, used, avail = disk
        return Row(source, size, used, avail, target)
    st = os.statvfs(target)
    size, free = st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize
    return Row(source, size, size - free, st.f_bavail * st.f_frsize, target)


def render(rows: list[Row], human_sizes: bool) -> str:
    size_head = "Size" if human_sizes else "1K-blocks"

    def f(n: int) -> str:
        return human(n).replace("i", "") if human_sizes else str(-(-n // 1024))

    table = [["Filesystem", size_head, "Used", "Available", "Use%", "Mounted on"]]
    table += [[r.source, f(r.size), f(r.used), f(r.avail), r.percent(), r.target] for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(5)]
    out = []
    for t in table:
        cells = [t[0].ljust(widths[0])] + [t[i].rjust(widths[i]) for i in range(1, 5)]
        out.append(" ".join(cells + [t[5]]))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="df", description="disk space of this container", add_help=False
    )
    p.add_argument("-h", "--human-readable", action="store_true", help="sizes like 1.5G")
    p.add_argument("-k", action="store_true", help="1K blocks (the default)")
    p.add_argument("--help", action="help")
    p.add_argument("paths", nargs="*", help="show the filesystems holding these paths")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    disk = _disk(Container().disk())
    table = mounts()
    if a.paths:
        table = [_holding(Path(x), table) for x in a.paths]
    rows = [row(src, target, disk) for src, target, _ in table]
    sys.stdout.write(render(rows, a.human_readable))
    return 0


def _disk(measured: tuple[int, int] | None) -> tuple[int, int, int] | None:
    if measured is None:
        return None
    size, used = measured
    st = os.statvfs("/")
    return size, used, max(0, min(size - used, st.f_bavail * st.f_frsize))


def _holding(path: Path, table: list[tuple[str, str, str]]) -> tuple[str, str, str]:
    real = str(path.resolve())
    best = max(
        (m for m in table if real == m[1] or real.startswith(m[1].rstrip("/") + "/")),
        key=lambda m: len(m[1]),
        default=None,
    )
    if best is None:
        raise SystemExit(f"df: {path}: no such file or directory")
    return best
