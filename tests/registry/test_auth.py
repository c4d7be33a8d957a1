"""Registries that speak TLS from the cloud's CA and require a login (real docker-registry)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from dockyard import pki
from dockyard.api.app import create_app
from dockyard.api.registry import RegistrySettings
from dockyard.api.server import init
from dockyard.db.session import Database
from dockyard.errors import PermanentError, TemporaryError
from dockyard.images import distribution, logins
from dockyard.images.registry import Registry
from dockyard.lab.procs import wait_for
from tests.api.conftest import Cloud
from tests.registry.util import free_port, rootfs

CREATED = "2026-01-01T00:00:00Z"


def _login(cfg: distribution.RegistryConfig, which: str) -> tuple[str, str]:
    assert cfg.logins is not None
    found = getattr(logins.read(cfg.logins), which)
    return found.username, found.password


def test_anonymous_pull_and_push_get_401(
    secured: tuple[distribution.RegistryConfig, pki.ServerTls], tmp_path: Path
) -> None:
    cfg, tls = secured
    assert cfg.url.startswith("https://")
    r = httpx.get(f"{cfg.url}/v2/_catalog", verify=str(tls.ca))
    assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"]
    with Registry(cfg.url, verify=str(tls.ca)) as anonymous:
        with pytest.raises(PermanentError, match="401"):
            anonymous.push_rootfs("x/web", "1", rootfs(tmp_path / "r.tar"), None, CREATED)
    wrong = (logins.SERVER, "not-the-password")
    with Registry(cfg.url, auth=wrong, verify=str(tls.ca)) as guess:
        with pytest.raises(PermanentError, match="401"):
            guess.repositories()


def test_the_servers_login_pushes_and_the_hosts_login_pulls_by_digest_over_tls(
    secured: tuple[distribution.RegistryConfig, pki.ServerTls], tmp_path: Path
) -> None:
    cfg, tls = secured
    with Registry(cfg.url, auth=_login(cfg, "server"), verify=str(tls.ca)) as server:
        pushed = server.push_rootfs("x/web", "1", rootfs(tmp_path / "r.tar"), None, CREATED)
    with Registry(cfg.url, auth=_login(cfg, "hosts"), verify=str(tls.ca)) as host:
        assert host.manifest_digest("x/web", pushed.digest) == pushed.digest
    with Registry(cfg.url, auth=_login(cfg, "hosts")) as unverified:  # the system's CAs only
        with pytest.raises(TemporaryError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            unverified.repositories()


def test_a_cache_of_a_tls_primary_verifies_it_with_the_ca_and_logs_in(
    secured: tuple[distribution.RegistryConfig, pki.ServerTls], tmp_path: Path
) -> None:
    primary, tls = secured
    with Registry(primary.url, auth=_login(primary, "server"), verify=str(tls.ca)) as server:
        pushed = server.push_rootfs("x/web", "1", rootfs(tmp_path / "r.tar"), None, CREATED)
    cache = distribution.RegistryConfig(
        tmp_path / "cache",
        f"127.0.0.1:{free_port()}",
        proxy_url=primary.url,
        tls_cert=tls.cert,
        tls_key=tls.key,
        logins=primary.logins,
        upstream_ca=tls.ca,
    )
    distribution.start(cache)
    try:
        assert distribution.load(cache.root) == cache  # what garbage collection restarts
        r = httpx.get(f"{cache.url}/v2/x/web/manifests/{pushed.digest}", verify=str(tls.ca))
        assert r.status_code == 401
        with Registry(cache.url, auth=_login(primary, "hosts"), verify=str(tls.ca)) as host:
            held = host.describe("x/web", pushed.digest)  # GET: fetched from the primary
            assert held is not None and held.digest == pushed.digest
            # and kept: the cache lists what it fetched once it has written it
            wait_for(lambda: "x/web" in host.repositories(), 10, "the cache to keep x/web")
    finally:
        distribution.stop(cache)
    assert (cache.root / "registry.log").stat().st_mode & 0o777 == 0o600  # it names the login


@pytest.fixture
def cloud(
    tmp_path: Path, secured: tuple[distribution.RegistryConfig, pki.ServerTls]
) -> Iterator[Cloud]:
    cfg, tls = secured
    assert cfg.logins is not None
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    token = init(db)
    settings = RegistrySettings(cfg.url, cfg.root, str(tls.ca), logins.read(cfg.logins))
    with TestClient(create_app(db, tmp_path, registry=settings)) as client:
        yield Cloud(client, token)
    db.engine.dispose()


def test_the_server_pushes_with_its_login_and_hands_hosts_theirs(
    cloud: Cloud, secured: tuple[distribution.RegistryConfig, pki.ServerTls], tmp_path: Path
) -> None:
    cfg, _ = secured
    cloud.catalog()
    token = cloud.register("h1")
    image = cloud.ok("POST", "/images", json={"name": "web", "source": "rootfs"})
    up = cloud.ok(
        "PUT", f"/images/{image['id']}/file", content=rootfs(tmp_path / "r.tar").read_bytes()
    )
    assert up["digest"] and up["registry_url"] == cfg.url
    cloud.ok(
        "POST",
        "/instances",
        json={"name": "a", "image": "web", "flavor": "small", "network": "net"},
    )
    [want] = cloud.ok("GET", "/agent/hosts/h1/desired", token)["instances"]
    assert want["image_pulls"] and want["image_pull_login"] == {
        "registry": None,
        "username": logins.HOSTS,
        "password": _login(cfg, "hosts")[1],
    }


def test_registry_login_is_the_servers_login_for_admins_only(
    cloud: Cloud, secured: tuple[distribution.RegistryConfig, pki.ServerTls]
) -> None:
    cfg, _ = secured
    found = cloud.ok("GET", "/registries/login")
    assert found == {
        "registry": cfg.addr,
        "username": logins.SERVER,
        "password": _login(cfg, "server")[1],
    }
    cloud.ok("POST", "/projects", json={"name": "p1"})
    body = {"name": "rita", "project": "p1", "role": "member"}
    member = cloud.ok("POST", "/users", json=body)["token"]
    r = cloud.call("GET", "/registries/login", member)
    assert r.status_code == 403  # any registry login may push: members get none
