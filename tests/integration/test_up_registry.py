"""`dockyard up` runs a registry: the demo image is pushed there and pulled by digest."""

from __future__ import annotations

import json

import httpx
import pytest

from dockyard.images import distribution
from tests.integration.cluster import wait_for
from tests.integration.test_up import Up, dockerd  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_up_pushes_the_demo_image_and_the_agent_pulls_it_by_digest(dockerd) -> None:  # noqa: F811
    up = Up(dockerd.root / "state", dockerd.url)
    up.start()
    cfg = distribution.load(up.state / "registry")
    try:
        assert cfg.addr == f"127.0.0.1:{up.port + 1}"
        shown = up.cli("image", "show", "demo", "-f", "json")
        assert shown.returncode == 0, shown.stderr
        demo = json.loads(shown.stdout)
        assert demo["digest"].startswith("sha256:") and demo["registry_url"] == cfg.url
        held = up.cli("registry", "images")
        assert demo["digest"] in held.stdout and "demo" in held.stdout, held.stderr
        # plain HTTP on loopback, but no anonymous pulls or pushes
        assert cfg.url.startswith("http://127.0.0.1:") and cfg.logins is not None
        assert httpx.get(f"{cfg.url}/v2/_catalog").status_code == 401
        login = up.cli("registry", "login")
        assert login.returncode == 0, login.stderr
        assert login.stdout.splitlines()[-1] == (
            f"docker login {cfg.addr} --username dockyard --password-stdin"
        )
        wait_for(lambda: "uptest" in up.cli("host", "list").stdout, 30, "the host to register")
        args = ("--image", "demo", "--flavor", "small", "--network", "demo", "--wait")
        r = up.cli("server", "create", "reg1", *args, "-f", "json")
        assert r.returncode == 0, r.stderr
        import docker

        client = docker.DockerClient(base_url=dockerd.url)
        repo = demo["ref"].rpartition(":")[0]
        pulled = client.images.get(demo["ref"]).attrs["RepoDigests"]
        assert f"{cfg.addr}/{repo}@{demo['digest']}" in pulled, pulled
        assert up.cli("server", "delete", "reg1", "--wait").returncode == 0
    finally:
        assert up.stop() == 0
    assert distribution.pid(cfg) is None  # the registry stopped with `dockyard up`
