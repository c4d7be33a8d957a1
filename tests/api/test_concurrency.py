"""50 concurrent creates through a real HTTP server never share an IP or a core."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from dockyard.api.server import init
from dockyard.db.session import Database
from tests.api.servers import serving

pytestmark = pytest.mark.slow


@pytest.fixture
def server(backend_db: Database, tmp_path: Path):
    token = init(backend_db)
    with serving(backend_db, tmp_path) as url:
        yield url, token


def test_fifty_concurrent_creates_get_distinct_ips_and_cores(server):
    url, admin = server
    h = {"authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, headers=h, timeout=60) as c:
        c.post(
            "/networks",
            json={"name": "net", "bridge": "dyt-c0", "subnet": {"cidr": "198.18.0.0/24"}},
        ).raise_for_status()
        c.post(
            "/flavors", json={"name": "pin", "vcpus": 1, "memory_mb": 16, "dedicated": True}
        ).raise_for_status()
        c.post("/images", json={"name": "img", "source": "docker", "ref": "x:1"}).raise_for_status()
        agents = []
        for host in ("h1", "h2"):
            t = c.post("/agent-tokens", json={"host": host}).json()["token"]
            agents.append(t)
            httpx.post(
                f"{url}/agent/hosts",
                headers={"authorization": f"Bearer {t}"},
                json={"name": host, "cores": 32, "memory_mb": 65536, "disk_gb": 10},
            ).raise_for_status()

    def create(i: int) -> httpx.Response:
        with httpx.Client(base_url=url, headers=h, timeout=120) as c:
            return c.post(
                "/instances",
                json={"name": f"vm{i}", "image": "img", "flavor": "pin", "network": "net"},
            )

    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(create, range(50)))
    elapsed = time.monotonic() - started
    codes = [r.status_code for r in results]
    assert codes == [202] * 50, [r.text for r in results if r.status_code != 202][:3]
    ips = [r.json()["ip"] for r in results]
    assert len(set(ips)) == 50
    with httpx.Client(base_url=url, headers=h) as c:
        hosts = {x["name"]: x for x in c.get("/hosts").json()}
    pins = [(n, core) for n, x in hosts.items() for core in x["pinned_cores"]]
    assert len(pins) == 50 and len(set(pins)) == 50
    # the scheduler spread them (by free RAM): both hosts got some
    assert all(len(x["pinned_cores"]) > 0 for x in hosts.values())
    print(
        f"\n50 concurrent creates on {url}: {elapsed:.2f}s, per-host pins "
        f"{ {n: len(x['pinned_cores']) for n, x in hosts.items()} }"
    )
