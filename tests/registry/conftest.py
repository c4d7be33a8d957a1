"""A real Docker Distribution (Debian's docker-registry) per test, on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dockyard import pki
from dockyard.api.app import create_app
from dockyard.api.registry import RegistrySettings
from dockyard.api.server import init
from dockyard.db.session import Database
from dockyard.images import distribution
from tests.api.conftest import Cloud
from tests.registry.util import free_port, secured_registry


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[distribution.RegistryConfig]:
    if shutil.which(distribution.PROGRAM) is None:
        pytest.fail("docker-registry is not installed; apt-get install docker-registry")
    cfg = distribution.RegistryConfig(tmp_path / "primary", f"127.0.0.1:{free_port()}")
    distribution.start(cfg)
    try:
        yield cfg
    finally:
        distribution.stop(cfg)


@pytest.fixture
def cache(
    tmp_path: Path, primary: distribution.RegistryConfig
) -> Iterator[distribution.RegistryConfig]:
    cfg = distribution.RegistryConfig(
        tmp_path / "cache", f"127.0.0.1:{free_port()}", proxy_url=primary.url
    )
    distribution.start(cfg)
    try:
        yield cfg
    finally:
        distribution.stop(cfg)


@pytest.fixture
def cloud(tmp_path: Path, primary: distribution.RegistryConfig) -> Iterator[Cloud]:
    """The API with ``primary`` as its registry (beside it: image delete collects garbage)."""
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    token = init(db)
    settings = RegistrySettings(primary.url, primary.root)
    with TestClient(create_app(db, tmp_path, registry=settings)) as client:
        yield Cloud(client, token)
    db.engine.dispose()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[distribution.RegistryConfig, pki.ServerTls]]:
    """A primary on loopback over TLS (certificate from a CA made here) with logins."""
    with secured_registry(tmp_path) as made:
        yield made
