"""A one-host cloud whose server pushes images to a real docker-registry on loopback,
over TLS from a CA made here and with the registries' logins (images/logins.py).

The cluster's dockerd pulls from it over TLS without a certs.d entry: dockerd
treats 127.0.0.0/8 as insecure by default, so it does not verify there (the lab
tests verification on a real address). The server learns the registry from
DOCKYARD_REGISTRY(_ROOT, _LOGINS, _CA), which its process inherits from the test.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dockyard.images import distribution, logins
from dockyard.images.registry import Registry
from tests.integration.cluster import Cluster, free_port
from tests.integration.conftest import running_cluster
from tests.registry.util import secured_registry


@pytest.fixture(scope="module")
def primary() -> Iterator[distribution.RegistryConfig]:
    if shutil.which(distribution.PROGRAM) is None:
        pytest.fail("docker-registry is not installed; apt-get install docker-registry")
    root = Path(tempfile.mkdtemp(prefix="dyk-registry-"))
    try:
        with secured_registry(root) as (cfg, _):
            yield cfg
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def registry_cluster(primary: distribution.RegistryConfig) -> Iterator[Cluster]:
    env = pytest.MonkeyPatch()
    env.setenv("DOCKYARD_REGISTRY", primary.url)
    env.setenv("DOCKYARD_REGISTRY_ROOT", str(primary.root))
    env.setenv("DOCKYARD_REGISTRY_LOGINS", str(primary.logins))
    env.setenv("DOCKYARD_REGISTRY_CA", str(ca_of(primary)))
    try:
        with running_cluster() as c:
            yield c
    finally:
        env.undo()


def az_cache(primary: distribution.RegistryConfig) -> distribution.RegistryConfig:
    """A pull-through cache of ``primary`` over TLS, with the same logins (not started)."""
    return replace(
        primary,
        root=primary.root.parent / f"cache-{free_port()}",
        addr=f"127.0.0.1:{free_port()}",
        proxy_url=primary.url,
        upstream_ca=ca_of(primary),
    )


def ca_of(cfg: distribution.RegistryConfig) -> Path:
    return cfg.root.parent / "tls" / "ca.pem"


def client(cfg: distribution.RegistryConfig, login: str = "hosts") -> Registry:
    """A client of ``cfg`` that verifies its certificate and logs in as ``login``."""
    assert cfg.logins is not None
    found = getattr(logins.read(cfg.logins), login)
    return Registry(cfg.url, auth=(found.username, found.password), verify=str(ca_of(cfg)))
