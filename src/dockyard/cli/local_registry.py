"""The registry ``dockyard up`` runs beside its server (Docker Distribution).

    STATE_DIR/registry/   config.yml, data/, registry.pid, registry.log
    listens on            127.0.0.1, the API's port + 1 (127.0.0.1:8788 by default)

The server gets ``--registry URL --registry-root DIR``: it pushes uploaded images
there and garbage-collects after ``image delete``. It listens on loopback only,
whatever ``--listen`` says: dockerd trusts a registry on 127.0.0.0/8 over plain
HTTP, and one elsewhere would need TLS or ``--insecure-registry`` on every
dockerd. So the all-in-one host pulls from it; hosts that join from other
machines need a registry they can reach (TLS from the CA: not done yet, see
images/README.md). It stops when ``dockyard up`` exits.
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
    port = int(listen.rpartition(":")[2]) + 1
    cfg = distribution.RegistryConfig(state / "registry", f"127.0.0.1:{port}")
    try:
        distribution.start(cfg)
    except DockyardError as exc:
        raise CliError(f"{exc.detail}; see {cfg.root}/registry.log") from exc
    atexit.register(distribution.stop, cfg)
    return ["--registry", cfg.url, "--registry-root", str(cfg.root)]
