"""An anti-affinity group holds under concurrency: members are read under the claim lock."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dockyard.api.server import init
from tests.api.servers import serving

pytestmark = pytest.mark.slow
HOSTS = ("h1", "h2", "h3")


def _setup(c: httpx.Client, url: str) -> str:
    c.post(
        "/networks", json={"name": "net", "bridge": "dyt-g0", "subnet": {"cidr": "198.18.0.0/24"}}
    ).raise_for_status()
    c.post("/flavors", json={"name": "f", "vcpus": 1, "memory_mb": 16}).raise_for_status()
    c.post("/images", json={"name": "img", "source": "docker", "ref": "x:1"}).raise_for_status()
    c.post("/projects", json={"name": "p1"}).raise_for_status()
    member = c.post("/users", json={"name": "alice", "project": "p1"}).json()["token"]
    for host in HOSTS:
        agent = c.post("/agent-tokens", json={"host": host}).json()["token"]
        httpx.post(
            f"{url}/agent/hosts",
            headers={"authorization": f"Bearer {agent}"},
            json={"name": host, "cores": 64, "memory_mb": 65536, "disk_gb": 10},
        ).raise_for_status()
    return str(member)


def test_twenty_concurrent_creates_into_an_anti_affinity_group_place_three(backend_db, tmp_path):
    admin = init(backend_db)
    with serving(backend_db, tmp_path) as url:
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"}) as c:
            member = _setup(c, url)
        auth = {"authorization": f"Bearer {member}"}
        with httpx.Client(base_url=url, headers=auth) as mc:
            body = {"name": "web", "policy": "anti-affinity"}
            mc.post("/server-groups", json=body).raise_for_status()

        def create(i: int) -> httpx.Response:
            with httpx.Client(base_url=url, headers=auth, timeout=120) as mc:
                body = {"name": f"vm{i}", "image": "img", "flavor": "f", "network": "net"}
                return mc.post("/instances", json={**body, "group": "web"})

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(create, range(20)))
        with httpx.Client(base_url=url, headers=auth) as mc:
            group = mc.get("/server-groups/web").json()
            listed = mc.get("/instances").json()
    codes = sorted(r.status_code for r in answers)
    assert codes == [202] * 3 + [409] * 17, [r.text for r in answers if r.status_code >= 500]
    placed = [r.json()["host"] for r in answers if r.status_code == 202]
    assert sorted(placed) == list(HOSTS)
    for refused in (r for r in answers if r.status_code == 409):
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["rejected"] == {"ServerGroupAntiAffinityFilter": 3}, problem
        assert "anti-affinity: 3 hosts already hold a member of web" in problem["detail"]
    # what users see afterwards agrees: three members, one per host, no half-made rows
    assert sorted(group["hosts"]) == list(HOSTS)
    assert all(len(names) == 1 for names in group["hosts"].values())
    assert len(group["members"]) == 3 and len(listed) == 3
