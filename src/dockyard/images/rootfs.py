"""Build a tiny machine-container rootfs from Debian's busybox-static.

The result is a tarball for ``dockyard image import NAME --rootfs FILE``.
Its /sbin/init is a shell PID 1 that reaps children and exits on TERM, so
stop and reboot are quick.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

from dockyard.errors import BadRequest
from dockyard.images import tarball

INIT = b"""#!/bin/sh
# PID 1 of a demo machine container: exit on TERM, reap children, idle.
trap 'exit 0' TERM INT
[ -x /etc/rc.local ] && /etc/rc.local
while :; do sleep 3600 & wait $!; done
"""
INIT_COMMAND = ["/sbin/init"]


def find_busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.exists() and b"statically linked" in _file(path):
            return path
    raise BadRequest("no static busybox found; install it: apt-get install busybox-static")


def _file(path: Path) -> bytes:
    if shutil.which("file"):
        return subprocess.run(["file", "-L", str(path)], capture_output=True).stdout
    return b"statically linked" if b"libc.so" not in path.read_bytes()[:65536] else b""


def build(dest: Path, busybox: Path | None = None) -> Path:
    """Write the rootfs tarball to ``dest``; return it."""
    busybox = busybox or find_busybox()
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    with tarfile.open(dest, "w") as tar:
        for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "var/log", "run"):
            tarball.add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in applets:
            if applet not in ("busybox", "init"):
                tarball.add_symlink(tar, f"bin/{applet}", "busybox")
        tarball.add_file(tar, "sbin/init", INIT, 0o755)
        tarball.add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        tarball.add_file(tar, "etc/group", b"root:x:0:\n", 0o644)
    return dest
