"""A one-host cloud whose server pushes images to a real docker-registry on loopback.

The cluster's dockerd pulls from it over plain HTTP without --insecure-registry:
dockerd treats 127.0.0.0/8 as insecure by default. The server learns the registry
from DOCKYARD_REGISTRY(_ROOT), which its process inherits from the test.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.images import distribution
from tests.integration.cluster import Cluster, free_port
from tests.integration.conftest import running_cluster


@pytest.fixture(scope="module")
def primary() -> Iterator[distribution.RegistryConfig]:
    if shutil.which(distribution.PROGRAM) is None:
        pytest.fail("docker-registry is not installed; apt-get install docker-registry")
    root = Path(tempfile.mkdtemp(prefix="dyk-registry-"))
    cfg = distribution.RegistryConfig(root / "primary", f"127.0.0.1:{free_port()}")
    distribution.start(cfg)
    try:
        yield cfg
    finally:
        distribution.stop(cfg)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def registry_cluster(primary: distribution.RegistryConfig) -> Iterator[Cluster]:
    env = pytest.MonkeyPatch()
    env.setenv("DOCKYARD_REGISTRY", primary.url)
    env.setenv("DOCKYARD_REGISTRY_ROOT", str(primary.root))
    try:
        with running_cluster() as c:
            yield c
    finally:
        env.undo()


def az_cache(primary: distribution.RegistryConfig) -> distribution.RegistryConfig:
    """A pull-through cache of ``primary`` (not started)."""
    return distribution.RegistryConfig(
        primary.root.parent / f"cache-{free_port()}",
        f"127.0.0.1:{free_port()}",
        proxy_url=primary.url,
    )
