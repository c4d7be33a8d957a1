"""Integration fixtures: a real dockerd, server, agent, bridge and probe namespace."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.integration.cluster import Cluster


def _can_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root (bridges, namespaces, dockerd)"
    for tool in ("dockerd", "ip", "nsenter", "busybox", "tc", "iperf3", "nft", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool} on PATH (see .ci/run)"
    return None


@pytest.fixture(scope="module")
def cluster():
    with running_cluster() as c:
        yield c


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A one-host cloud with the network "net", the flavor "small" and the image "demo"."""
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    c = Cluster()
    try:
        c.start()
        c.setup_demo()
        yield c
    finally:
        c.stop()


IMAGE_CACHE = os.environ.get("DOCKYARD_TEST_IMAGE_CACHE", "/var/cache/dockyard-test/images")


@pytest.fixture(scope="module")
def machine_image(cluster):
    """The Debian base image, built (or read from the cache) and registered as "machine"."""
    if shutil.which("mmdebstrap") is None:
        pytest.skip("needs mmdebstrap (see .ci/run)")
    started = time.monotonic()
    cluster.cli(
        "image",
        "build-base",
        "machine",
        "--cache-dir",
        IMAGE_CACHE,
        "--program",
        "web=/usr/bin/python3 -m http.server 8080",
    )
    print(f"\nbase image built or cached and uploaded in {time.monotonic() - started:.1f} s")
    return "machine"
