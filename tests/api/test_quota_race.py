"""Quotas hold under concurrency: the claim lock is taken before usage is counted."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dockyard.api.server import init
from tests.api.servers import serving

pytestmark = pytest.mark.slow


def _setup(c: httpx.Client, url: str) -> str:
    c.post(
        "/networks", json={"name": "net", "bridge": "dyt-q0", "subnet": {"cidr": "198.18.0.0/24"}}
    ).raise_for_status()
    c.post("/flavors", json={"name": "f", "vcpus": 1, "memory_mb": 16}).raise_for_status()
    c.post("/images", json={"name": "img", "source": "docker", "ref": "x:1"}).raise_for_status()
    c.post("/projects", json={"name": "p1"}).raise_for_status()
    member = c.post("/users", json={"name": "alice", "project": "p1"}).json()["token"]
    agent = c.post("/agent-tokens", json={"host": "h1"}).json()["token"]
    httpx.post(
        f"{url}/agent/hosts",
        headers={"authorization": f"Bearer {agent}"},
        json={"name": "h1", "cores": 64, "memory_mb": 65536, "disk_gb": 10},
    ).raise_for_status()
    return str(member)


@pytest.mark.parametrize("resource", ["instances", "vcpus"])
def test_twenty_concurrent_creates_never_pass_the_quota(backend_db, tmp_path, resource):
    admin = init(backend_db)
    with serving(backend_db, tmp_path) as url:
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"}) as c:
            member = _setup(c, url)
            c.patch("/projects/p1/quota", json={resource: 5}).raise_for_status()

        def create(i: int) -> int:
            with httpx.Client(
                base_url=url, headers={"authorization": f"Bearer {member}"}, timeout=120
            ) as mc:
                body = {"name": f"vm{i}", "image": "img", "flavor": "f", "network": "net"}
                return mc.post("/instances", json=body).status_code

        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(create, range(20)))
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {member}"}) as mc:
            used = mc.get("/quota").json()["resources"][resource]["used"]
    assert sorted(codes) == [202] * 5 + [403] * 15, codes
    assert used == 5
