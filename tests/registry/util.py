from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dockyard import pki
from dockyard.images import distribution, logins
from dockyard.lab.procs import free_port as _free_port


def free_port() -> int:
    return _free_port()


@contextmanager
def secured_registry(root: Path) -> Iterator[tuple[distribution.RegistryConfig, pki.ServerTls]]:
    """A primary on loopback over TLS (a certificate from a CA made under ``root``) that
    requires the logins in root/logins.json; stopped afterwards."""
    tls = pki.ensure_server_cert(root / "tls", ["127.0.0.1"], stem="registry")
    logins.ensure(root / "logins.json")
    cfg = distribution.RegistryConfig(
        root / "primary",
        f"127.0.0.1:{free_port()}",
        tls_cert=tls.cert,
        tls_key=tls.key,
        logins=root / "logins.json",
    )
    distribution.start(cfg)
    try:
        yield cfg, tls
    finally:
        distribution.stop(cfg)


def rootfs(path: Path, size: int = 1 << 20, content: bytes | None = None) -> Path:
    """A small tarball; ``content`` (random by default) makes it unique."""
    data = content if content is not None else os.urandom(size)
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path
