"""The registry ``dockyard up`` runs beside its server (Docker Distribution).

    STATE_DIR/registry/   config.yml, data/, registry.pid, registry.log
    listens on            the API's host, the API's port + 1 (127.0.0.1:8788 by default)

The server gets ``--registry URL --registry-root DIR``: it pushes uploaded images
there and garbage-collects after ``image delete``. A registry on 127.0.0.0/8
needs no dockerd setting (dockerd trusts loopback registries over plain HTTP);
one on another address needs ``--insecure-registry HOST:PORT`` on each host's
dockerd until it speaks TLS. It stops when ``dockyard up`` exits.
"""

from __future__ import annotations

import atexit
import shutil
from pathlib import Path

from dockyard.cli.client import CliError
from dockyard.errors import DockyardError
from dockyard.images import distribution


def start(state: Path, listen: str) -> list[str]:
    """Start (or keep) the registry of ``state``; the server's arguments that name it."""
    if shutil.which(distribution.PROGRAM) is None:
        raise CliError("docker-registry is not installed; apt-get install docker-registry")
    host, _, port = listen.rpartition(":")
    cfg = distribution.RegistryConfig(state / "registry", f"{host or '127.0.0.1'}:{int(port) + 1}")
    try:
        distribution.start(cfg)
    except DockyardError as exc:
        raise CliError(f"{exc.detail}; see {cfg.root}/registry.log") from exc
    atexit.register(distribution.stop, cfg)
    return ["--registry", cfg.url, "--registry-root", str(cfg.root)]
