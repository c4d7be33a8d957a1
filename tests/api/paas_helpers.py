"""A cloud with three hosts whose agents the test plays, for the PaaS's API tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.db import models as m
from tests.api.conftest import Cloud, _database

CHECK = {"kind": "http", "port": 8080, "path": "/healthz", "interval_s": 1}
HOSTS = ("h1", "h2", "h3")


class Paas(Cloud):
    """``Cloud`` plus the agents of three hosts and the deploy controller's clock."""

    def setup(self):
        self.catalog()
        self.ok("POST", "/images", json={"name": "img2", "source": "docker", "ref": "bb:2"})
        self.agents = {h: self.register(h) for h in HOSTS}
        self.clock = datetime.now(UTC).replace(tzinfo=None)
        self.ok("POST", "/apps", json={"name": "shop"})

    def stack(self, name="web", replicas=3, **kw):
        body = {
            "name": name,
            "image": "img",
            "flavor": "small",
            "network": "net",
            "replicas": replicas,
            "health_check": CHECK,
            **kw,
        }
        return self.call("POST", "/apps/shop/stacks", json=body)

    def show(self, name="web"):
        return self.ok("GET", f"/apps/shop/stacks/{name}")

    def report(self, inst, **kw):
        token = self.agents[inst["host"]]
        self.ok("PUT", f"/agent/instances/{inst['id']}/state", token, json=kw)

    def settle(self, name="web", health="healthy", down=()):
        """Every member the agents have work for does it: spawn, rebuild, delete; its
        check then says ``health`` (members of other releases stay as they are). The
        agents of hosts in ``down`` say nothing."""
        for member in self.show(name)["instances"]:
            if member["host"] in down:
                continue
            inst = self.ok("GET", f"/instances/{member['id']}")
            task = inst["task_state"]
            if task == "deleting":
                self.report(inst, power_state="nostate", task_done="deleting", gone=True)
            elif task == "rebuilding":
                seq = self._seq(inst)
                self.report(inst, power_state="running", rebuilt_seq=seq, health={"status": health})
            elif task == "spawning":
                self.report(inst, power_state="running", task_done="spawning",
                            health={"status": health})  # fmt: skip

    def _seq(self, inst):
        token = self.agents[inst["host"]]
        desired = self.ok("GET", f"/agent/hosts/{inst['host']}/desired", token)["instances"]
        return next(d["rebuild_seq"] for d in desired if d["id"] == inst["id"])

    def host_down(self, name):
        """Its last heartbeat an hour ago: down, as the server reads it."""
        db = self.client.app.state.db
        with db.session() as s:
            host = s.scalar(select(m.Host).where(m.Host.name == name))
            host.last_heartbeat = m.now() - timedelta(hours=1)

    def step(self, seconds=0.0):
        """One pass of the deploy controller, ``seconds`` later on its clock (which never
        lags the real one: deploys begun by a request count from the real time)."""
        real = datetime.now(UTC).replace(tzinfo=None)
        self.clock = max(self.clock, real) + timedelta(seconds=seconds)
        return self.client.app.state.deploy_controller.step(self.clock)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def paas(request, tmp_path):
    yield from _paas(request.param, tmp_path)


def _paas(backend, tmp_path):
    db, drop = _database(tmp_path, backend)
    token = init(db)
    app = create_app(db, tmp_path, deploy_check_every=None)  # the test drives the controller
    with TestClient(app) as client:
        cloud = Paas(client, token)
        cloud.setup()
        yield cloud
    db.engine.dispose()
    if drop:
        drop()
