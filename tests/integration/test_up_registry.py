"""`dockyard up` runs a registry over TLS from the cloud's CA: the demo image is pushed
there and pulled by digest, by a dockerd that verifies it (/etc/docker/certs.d)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pytest

from dockyard.images import distribution
from tests.integration.cluster import wait_for
from tests.integration.test_up import Up, dockerd, switch_address  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.root, pytest.mark.slow]

CERTS_D = Path("/etc/docker/certs.d")


def _ca(up: Up) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(up.state / "tls" / "ca.pem"))


def _pulled_by_digest(up: Up, docker_url: str, addr: str) -> dict[str, str]:
    """The agent placed an instance of the demo image: its dockerd holds it by digest
    from the registry at ``addr``."""
    demo = json.loads(up.cli("image", "show", "demo", "-f", "json").stdout)
    assert demo["digest"].startswith("sha256:") and demo["registry_url"] == f"https://{addr}"
    wait_for(lambda: "uptest" in up.cli("host", "list").stdout, 30, "the host to register")
    args = ("--image", "demo", "--flavor", "small", "--network", "demo", "--wait")
    r = up.cli("server", "create", "reg1", *args, "-f", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    import docker

    client = docker.DockerClient(base_url=docker_url)
    repo = demo["ref"].rpartition(":")[0]
    pulled = client.images.get(demo["ref"]).attrs["RepoDigests"]
    assert f"{addr}/{repo}@{demo['digest']}" in pulled, pulled
    assert up.cli("server", "delete", "reg1", "--wait").returncode == 0
    return dict(demo)


def test_up_serves_its_registry_over_tls_and_the_agent_pulls_by_digest(dockerd) -> None:  # noqa: F811
    up = Up(dockerd.root / "state", dockerd.url)
    up.start()
    cfg = distribution.load(up.state / "registry")
    try:
        assert cfg.addr == f"127.0.0.1:{up.port + 1}" and cfg.url.startswith("https://")
        # TLS from the cloud's CA, and no anonymous pulls or pushes
        assert httpx.get(f"{cfg.url}/v2/_catalog", verify=_ca(up)).status_code == 401
        assert httpx.get(f"http://{cfg.addr}/v2/").status_code == 400  # plain http: refused
        held = up.cli("registry", "images")
        assert "demo" in held.stdout, held.stderr
        login = up.cli("registry", "login")
        assert login.returncode == 0, login.stderr
        assert login.stdout.splitlines()[-1] == (
            f"docker login {cfg.addr} --username dockyard --password-stdin"
        )
        _pulled_by_digest(up, dockerd.url, cfg.addr)
    finally:
        assert up.stop() == 0  # and the agent's certs.d entry goes
    assert distribution.pid(cfg) is None  # the registry stopped with `dockyard up`


def test_beyond_loopback_hosts_pull_from_the_registry_verified_by_the_cloud_ca(
    dockerd,  # noqa: F811
    switch_address,  # noqa: F811
) -> None:
    """The registry listens on the API's address with a certificate for it; dockerd does
    not trust that address without TLS, so the pull proves it verified the CA, which the
    agent put in certs.d."""
    up = Up(dockerd.root / "state", dockerd.url, switch_address)
    addr = f"{switch_address}:{up.port + 1}"
    trusted = CERTS_D / addr
    assert not trusted.exists()
    up.start()
    try:
        assert distribution.load(up.state / "registry").url == f"https://{addr}"
        _pulled_by_digest(up, dockerd.url, addr)
        assert (trusted / "ca.crt").read_bytes() == (up.state / "tls" / "ca.pem").read_bytes()
    finally:
        assert up.stop() == 0
    assert not trusted.exists()


def test_registry_http_keeps_the_plain_loopback_registry(dockerd) -> None:  # noqa: F811
    up = Up(dockerd.root / "state", dockerd.url, "127.0.0.1", "--registry-http", "--no-demo")
    up.start()
    try:
        cfg = distribution.load(up.state / "registry")
        assert cfg.url == f"http://127.0.0.1:{up.port + 1}" and cfg.tls_cert is None
        assert httpx.get(f"{cfg.url}/v2/_catalog").status_code == 401
    finally:
        assert up.stop() == 0
