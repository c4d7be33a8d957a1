"""Both sides of the builds' wire contract together: the real server and the agent's
real build runner (compute/builds.py through its HTTP client), with the fake driver and
a fake cloner in place of dockerd and git."""

from __future__ import annotations

import threading

import httpx

from dockyard.api.app import create_app
from dockyard.api.registry import RegistrySettings
from dockyard.api.server import init
from dockyard.compute.builds import Builder
from dockyard.compute.client import ServerClient
from dockyard.compute.drivers.fake import FakeDriver
from dockyard.db.session import Database
from tests.api.build_helpers import REGISTRY, REPO, SHA
from tests.api.servers import serving_app
from tests.api.test_builds_cli import _setup
from tests.integration.cluster import wait_for
from tests.unit.test_builds_agent import FakeCloner


class QuickClient(ServerClient):
    """The agent's client, its long polls held 1 s at most (the test ends without
    waiting out a 25 s poll)."""

    def builds(self, since, wait):
        return super().builds(since, min(wait, 1.0))


def test_the_agents_build_runner_carries_out_the_servers_orders(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    app = create_app(db, tmp_path, registry=RegistrySettings(REGISTRY), build_check_every=None)
    with serving_app(app) as url:
        token = _setup(url, admin)
        c = httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"})
        body = {"repo": REPO, "branch": "main", "stack": "web", "secret": "x" * 16}
        c.post("/apps/shop/hooks", json=body).raise_for_status()
        agent = QuickClient(url.removesuffix("/v1"), token, "b1")
        driver = FakeDriver()
        builder = Builder(agent, driver, tmp_path / "agent", [6], memory_mb=2048,
                          cloner=FakeCloner())
        stop = threading.Event()
        runner = threading.Thread(target=builder.run, args=(stop,), daemon=True)
        runner.start()
        try:
            built = c.post("/apps/shop/builds", json={"ref": SHA}).json()

            def finished():
                b = c.get(f"/builds/{built['id']}").json()
                return b if b["status"] not in ("queued", "running") else None

            b = wait_for(finished, 20, "the build to end")
            assert b["status"] == "succeeded", b
            assert b["tag"] == f"admin/shop:{b['created_at'][:10].replace('-', '')}-{SHA[:7]}"
            (spec,) = driver.builds
            assert spec.cpuset == [6] and spec.ref.startswith("127.0.0.1:5999/admin/shop:")
            image = c.get(f"/images/{b['image']}").json()
            assert image["status"] == "active" and image["digest"] == b["digest"]
            text = wait_for(lambda: c.get(f"/builds/{b['id']}/log").json()["text"] or None, 5,
                            "the log")  # fmt: skip
            assert "cloned" in text and "pushed" in text

            driver.build_gate = threading.Event()  # the next build runs until stopped
            second = c.post("/apps/shop/builds", json={"ref": "main"}).json()
            wait_for(lambda: driver.builds[1:] or None, 10, "the second build to start")
            c.post(f"/builds/{second['id']}/cancel").raise_for_status()
            wait_for(lambda: builder._running is None or not builder._running[2].is_alive(),
                     10, "the agent to stop it")  # fmt: skip
            assert c.get(f"/builds/{second['id']}").json()["status"] == "cancelled"
            assert len(driver.registry) == 1  # nothing more pushed
        finally:
            stop.set()
            runner.join(10)
            agent.close()
            c.close()
    db.engine.dispose()
