"""The API against a real database (SQLite file; PostgreSQL when DOCKYARD_TEST_PG_URL is set)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.db.session import Database

PG_URL = os.environ.get("DOCKYARD_TEST_PG_URL")


class Cloud:
    def __init__(self, client: TestClient, admin: str) -> None:
        self.client, self.admin = client, admin

    def call(self, method, path, token=None, **kw):
        headers = {"authorization": f"Bearer {token or self.admin}"}
        return self.client.request(method, "/v1" + path, headers=headers, **kw)

    def ok(self, method, path, token=None, **kw):
        r = self.call(method, path, token, **kw)
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    def agent_token(self, host):
        return self.ok("POST", "/agent-tokens", json={"host": host})["token"]

    def register(self, host="h1", cores=4, memory_mb=8192, **kw):
        token = self.agent_token(host)
        body = {"name": host, "cores": cores, "memory_mb": memory_mb, "disk_gb": 100, **kw}
        self.ok("POST", "/agent/hosts", token, json=body)
        return token

    def catalog(self, pool_end="198.18.0.250"):
        self.ok(
            "POST",
            "/networks",
            json={
                "name": "net",
                "bridge": "dyt-br0",
                "subnet": {
                    "cidr": "198.18.0.0/24",
                    "gateway": "198.18.0.1",
                    "pools": [{"start": "198.18.0.10", "end": pool_end}],
                    "hostname_rule": "web{o3}{o4:03d}",
                },
            },
        )
        self.ok("POST", "/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 128})
        self.ok(
            "POST",
            "/flavors",
            json={"name": "pinned", "vcpus": 1, "memory_mb": 128, "dedicated": True},
        )
        self.ok("POST", "/images", json={"name": "img", "source": "docker", "ref": "bb:latest"})

    def create(self, name, token=None, **kw):
        body = {"name": name, "image": "img", "flavor": "small", "network": "net", **kw}
        return self.call("POST", "/instances", token, json=body)


def _database(tmp_path, backend):
    if backend == "sqlite":
        return Database(f"sqlite:///{tmp_path}/dockyard.db"), None
    if not PG_URL:
        pytest.skip("PostgreSQL tests need DOCKYARD_TEST_PG_URL (.ci/run sets it)")
    name = f"dytest_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    url = PG_URL.rsplit("/", 1)[0] + "/" + name

    def drop():
        # a server thread (a checker, a lease) may still be closing its connection; FORCE
        # cannot end a session of another role (autovacuum's), so try again a few times
        for attempt in range(20):
            try:
                with admin.connect() as c:
                    c.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
                break
            except DBAPIError:
                if attempt == 19:
                    raise
                time.sleep(0.5)
        admin.dispose()

    return Database(url), drop


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend_db(request, tmp_path):
    db, drop = _database(tmp_path, request.param)
    yield db
    db.engine.dispose()
    if drop:
        drop()


@pytest.fixture
def cloud(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    token = init(db)
    with TestClient(create_app(db, tmp_path)) as client:
        yield Cloud(client, token)
    db.engine.dispose()
