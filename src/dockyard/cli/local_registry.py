"""The registry ``dockyard up`` runs beside its server (Docker Distribution).

    STATE_DIR/registry/   config.yml, data/, registry.pid, registry.log,
                          logins.json + htpasswd (images/logins.py; 0600)
    listens on            127.0.0.1, the API's port + 1 (127.0.0.1:8788 by default)

The server gets ``--registry URL --registry-root DIR --registry-logins FILE``: it
pushes uploaded images there (as ``dockyard``) and garbage-collects after ``image
delete``; the agent pulls as ``dockyard-hosts``; anonymous requests get 401.
It listens on loopback only, whatever ``--listen`` says, and so stays plain HTTP:
dockerd trusts a registry on 127.0.0.0/8 without TLS, and nothing off the host
reaches it. So the all-in-one host pulls from it; hosts that join from other
machines need a registry they can reach, run with a certificate from the CA as
the lab's are (lab/registry.py). It stops when ``dockyard up`` exits.
"""

from __future__ import annotations

import atexit
import shutil
from pathlib import Path

from dockyard.cli.client import CliError
from dockyard.errors import DockyardError
from dockyard.images import distribution, logins


def start(state: Path, listen: str) -> list[str]:
    """Start (or keep) the registry of ``state``; the server's arguments that name it."""
    if shutil.which(distribution.PROGRAM) is None:
        raise CliError("docker-registry is not installed; apt-get install docker-registry")
    port = int(listen.rpartition(":")[2]) + 1
    root = state / "registry"
    logins.ensure(root / "logins.json")  # made once; kept across `up`s
    cfg = distribution.RegistryConfig(root, f"127.0.0.1:{port}", logins=root / "logins.json")
    try:
        distribution.start(cfg)
    except DockyardError as exc:
        raise CliError(f"{exc.detail}; see {cfg.root}/registry.log") from exc
    atexit.register(distribution.stop, cfg)
    return [
        "--registry", cfg.url, "--registry-root", str(cfg.root),
        "--registry-logins", str(root / "logins.json"),
    ]  # fmt: skip
