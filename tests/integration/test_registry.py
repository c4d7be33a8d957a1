"""Instances spawn from images pulled by digest from the registry, through the AZ's cache."""

from __future__ import annotations

import docker.errors
import httpx
import pytest

from dockyard.images import distribution, logins
from tests.integration.cluster import Cluster, wait_for

# the fixtures, imported for pytest to find
from tests.integration.registry_fixtures import (  # noqa: F401
    az_cache,
    client,
    primary,
    registry_cluster,
)


def _active(c: Cluster, name: str) -> dict:
    def ready():
        inst = c.api("GET", f"/instances/{name}")
        assert inst["vm_state"] != "error", inst
        return inst if inst["vm_state"] == "active" and inst["power_state"] == "running" else None

    return wait_for(ready, 90, f"{name} to run")


def _repo_digests(c: Cluster, instance_id: str) -> list[str]:
    assert c.docker is not None
    container = c.container(instance_id)
    return list(c.docker.images.get(container.attrs["Image"]).attrs["RepoDigests"])


def test_an_instance_runs_the_image_pulled_by_digest_from_the_primary(
    registry_cluster: Cluster,  # noqa: F811
    primary: distribution.RegistryConfig,  # noqa: F811
) -> None:
    c = registry_cluster
    image = c.api("GET", "/images/demo")
    assert image["digest"] and image["registry_url"] == primary.url
    assert not list((c.root / "server" / "images").glob("*.tar"))  # not kept by the server
    c.create("r1")
    inst = _active(c, "r1")
    repo = image["ref"].rpartition(":")[0]
    assert f"{primary.addr}/{repo}@{image['digest']}" in _repo_digests(c, inst["id"])
    assert "GET /v1/images/" not in (c.root / "server.log").read_text()


def test_a_host_pulls_through_its_az_cache_and_falls_back_to_the_primary(
    registry_cluster: Cluster,  # noqa: F811
    primary: distribution.RegistryConfig,  # noqa: F811
) -> None:
    c = registry_cluster
    az = c.api("GET", "/hosts/itest")["availability_zone"]
    cache = az_cache(primary)
    distribution.start(cache)
    try:
        c.cli("registry", "add", "--az", az, cache.url)
        tar = c.root / "demo.tar"
        c.cli("image", "import", "cached", "--rootfs", str(tar))
        c.create("r2", image="cached")
        inst = _active(c, "r2")
        image = c.api("GET", "/images/cached")
        repo = image["ref"].rpartition(":")[0]
        assert f"{cache.addr}/{repo}@{image['digest']}" in _repo_digests(c, inst["id"])
        with client(cache) as reg:
            assert repo in reg.repositories()  # the cache holds what its AZ pulled
    finally:
        distribution.stop(cache)
    # the cache is down: the next image still comes, from the primary
    c.cli("image", "import", "fallback", "--rootfs", str(c.root / "demo.tar"))
    c.create("r3", image="fallback")
    inst = _active(c, "r3")
    image = c.api("GET", "/images/fallback")
    repo = image["ref"].rpartition(":")[0]
    assert f"{primary.addr}/{repo}@{image['digest']}" in _repo_digests(c, inst["id"])
    c.cli("registry", "remove", "--az", az)


def test_deleting_an_image_in_use_is_refused_and_its_manifest_stays(
    registry_cluster: Cluster,  # noqa: F811
    primary: distribution.RegistryConfig,  # noqa: F811
) -> None:
    c = registry_cluster
    image = c.api("GET", "/images/demo")
    done = c.cli("image", "delete", "demo", check=False)
    assert done.returncode == 1
    repo, _, tag = image["ref"].rpartition(":")
    with client(primary) as reg:
        assert reg.manifest_digest(repo, tag) == image["digest"]


def test_dockerd_pulls_by_digest_only_with_the_hosts_login(
    registry_cluster: Cluster,  # noqa: F811
    primary: distribution.RegistryConfig,  # noqa: F811
) -> None:
    c = registry_cluster
    assert c.docker is not None and primary.logins is not None
    assert primary.url.startswith("https://")
    c.cli("image", "import", "guarded", "--rootfs", str(c.root / "demo.tar"))
    image = c.api("GET", "/images/guarded")
    source = f"{primary.addr}/{image['ref'].rpartition(':')[0]}@{image['digest']}"
    anonymous = httpx.get(f"{primary.url}/v2/_catalog", verify=False)  # noqa: S501
    assert anonymous.status_code == 401
    with pytest.raises(docker.errors.APIError, match="(?i)unauthorized|no basic auth"):
        c.docker.api.pull(source)
    hosts = logins.read(primary.logins).hosts
    auth = {"username": hosts.username, "password": hosts.password}
    try:
        c.docker.api.pull(source, auth_config=auth)
        assert source in c.docker.images.get(source).attrs["RepoDigests"]
    finally:
        c.docker.images.remove(source, force=True)
