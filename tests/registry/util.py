from __future__ import annotations

import io
import os
import socket
import tarfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rootfs(path: Path, size: int = 1 << 20, content: bytes | None = None) -> Path:
    """A small tarball; ``content`` (random by default) makes it unique."""
    data = content if content is not None else os.urandom(size)
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path
