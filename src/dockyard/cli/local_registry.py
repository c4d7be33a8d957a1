"""The registry ``dockyard up`` runs beside its server (Docker Distribution).

    STATE_DIR/registry/   config.yml, data/, registry.pid, registry.log,
                          logins.json + htpasswd (images/logins.py; 0600)
    STATE_DIR/tls/        registry.pem, registry.key (0600): from the cloud's CA
    listens on            the API's address (127.0.0.1 on loopback, the first of this
                          machine's addresses for a wildcard), the API's port + 1

It speaks TLS with a certificate from the cloud's CA (dockyard.pki) for the same
names as the API's, so hosts that join from other machines pull from it verified:
their agents run with ``--trust-registries`` and put the CA in
/etc/docker/certs.d/HOST:PORT/ca.crt before a pull (as the lab's dockerds trust
the lab's registries); this host's agent too. ``dockyard up --registry-http``
keeps the older registry: plain HTTP on 127.0.0.1 only (dockerd trusts loopback
without TLS; nothing off the host reaches it).

The server gets ``--registry URL --registry-root DIR --registry-logins FILE``: it
pushes uploaded images there (as ``dockyard``, verified with its --tls-ca) and
garbage-collects after ``image delete``; agents pull as ``dockyard-hosts``;
anonymous requests get 401. It stops when ``dockyard up`` exits.
"""

from __future__ import annotations

import atexit
import shutil
from pathlib import Path

from dockyard import pki
from dockyard.cli.client import CliError
from dockyard.errors import DockyardError
from dockyard.images import distribution, logins
from dockyard.images.distribution import RegistryConfig as Registry


def where(state: Path, address: str, port: int, names: list[str], plain: bool) -> Registry:
    """The registry of ``state``: at ``address``:``port`` over TLS with a certificate for
    ``names`` (``plain``: on 127.0.0.1, plain HTTP)."""
    root = state / "registry"
    if plain:
        return Registry(root, f"127.0.0.1:{port}", logins=root / "logins.json")
    tls = pki.ensure_server_cert(state / "tls", names, stem="registry")
    host = f"[{address}]" if ":" in address else address
    return Registry(
        root, f"{host}:{port}", tls_cert=tls.cert, tls_key=tls.key, logins=root / "logins.json"
    )


def start(cfg: Registry) -> list[str]:
    """Start (or keep) the registry ``cfg``; the server's arguments that name it."""
    if shutil.which(distribution.PROGRAM) is None:
        raise CliError("docker-registry is not installed; apt-get install docker-registry")
    assert cfg.logins is not None
    logins.ensure(cfg.logins)  # made once; kept across `up`s
    try:
        distribution.start(cfg)
    except DockyardError as exc:
        raise CliError(f"{exc.detail}; see {cfg.root}/registry.log") from exc
    atexit.register(distribution.stop, cfg)
    return [
        "--registry", cfg.url, "--registry-root", str(cfg.root),
        "--registry-logins", str(cfg.logins),
    ]  # fmt: skip
