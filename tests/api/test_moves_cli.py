"""``dockyard server migrate|snapshot``, ``host drain`` and ``migration list`` against a
real server, with a fake agent thread answering the hosts' orders through the agent API."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from dockyard.api.app import create_app
from dockyard.api.registry import RegistrySettings
from dockyard.api.server import init
from dockyard.db.session import Database
from tests.api.servers import serving_app

DIGEST = "sha256:" + "ef" * 32


class FakeAgents(threading.Thread):
    """Carries out snapshot orders and starts moved instances, like the real agents,
    until stopped; ``fail_start`` makes the targets report a failed start."""

    def __init__(self, url: str, tokens: dict[str, str], fail_start: bool = False) -> None:
        super().__init__(daemon=True)
        self.url, self.tokens, self.fail_start = url, tokens, fail_start
        self.done = threading.Event()
        self.seen: set[tuple[str, str]] = set()

    def run(self) -> None:
        while not self.done.wait(0.05):
            for host, token in self.tokens.items():
                self._serve(host, httpx.Headers({"authorization": f"Bearer {token}"}))

    def _serve(self, host: str, headers: httpx.Headers) -> None:
        state = httpx.get(f"{self.url}/agent/hosts/{host}/desired", headers=headers).json()
        for want in state["instances"]:
            path = f"{self.url}/agent/instances/{want['id']}/state"
            order = want.get("snapshot")
            if order and (host, order["id"]) not in self.seen:
                self.seen.add((host, order["id"]))
                done = {"id": order["id"], "digest": DIGEST, "layers": 2, "seconds": {"push": 0.2}}
                httpx.put(path, headers=headers, json={"power_state": "shutdown", "snapshot": done})
            elif want["task_state"] == "migrating" and want["power"] == "running":
                body = {"power_state": "running", "task_done": "migrating"}
                if self.fail_start:
                    body = {**body, "power_state": "nostate", "error": "no space left on device"}
                httpx.put(path, headers=headers, json=body)


@pytest.fixture
def served(tmp_path, monkeypatch):
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    app = create_app(db, tmp_path, registry=RegistrySettings("https://198.18.0.2:5000"))
    with serving_app(app) as url:
        tokens = _setup(url, admin)
        monkeypatch.setenv("DOCKYARD_URL", url.removesuffix("/v1"))
        monkeypatch.setenv("DOCKYARD_TOKEN", admin)
        yield url, tokens
    db.engine.dispose()


def _setup(url: str, admin: str) -> dict[str, str]:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"}) as c:
        net = {"name": "net", "bridge": "dyt-m1", "subnet": {"cidr": "198.18.1.0/24"}}
        c.post("/networks", json=net).raise_for_status()
        c.post("/flavors", json={"name": "f", "vcpus": 1, "memory_mb": 64}).raise_for_status()
        c.post("/images", json={"name": "img", "source": "docker", "ref": "x:1"}).raise_for_status()
        tokens = {}
        for host in ("h1", "h2"):
            tokens[host] = c.post("/agent-tokens", json={"host": host}).json()["token"]
            httpx.post(
                f"{url}/agent/hosts",
                headers={"authorization": f"Bearer {tokens[host]}"},
                json={"name": host, "cores": 8, "memory_mb": 4096, "disk_gb": 50},
            ).raise_for_status()
        for name in ("web", "db"):
            body = {"name": name, "image": "img", "flavor": "f", "network": "net"}
            inst = c.post("/instances", json=body).json()
            httpx.put(
                f"{url}/agent/instances/{inst['id']}/state",
                headers={"authorization": f"Bearer {tokens[inst['host']]}"},
                json={"power_state": "running", "task_done": "spawning"},
            ).raise_for_status()
        return tokens


def _host_of(name: str) -> str:
    from dockyard.cli.client import Api

    return str(Api().get(f"/instances/{name}")["host"])


def test_migrate_wait_follows_it_to_the_end_and_migration_list_shows_it(served, capsys):
    from dockyard.cli.main import main

    url, tokens = served
    source = _host_of("web")
    agents = FakeAgents(url, tokens)
    agents.start()
    try:
        main(["server", "migrate", "web", "--wait", "-f", "json"])
    finally:
        agents.done.set()
        agents.join()
    out = capsys.readouterr()
    mig = json.loads(out.out)
    assert mig["status"] == "finished" and mig["source"] == source
    assert "web: snapshotting" in out.err and "web: finished" in out.err
    assert _host_of("web") == mig["target"] != source
    main(["migration", "list", "--server", "web"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ["ID", "INSTANCE", "KIND", "SOURCE", "TARGET", "STATUS"]
    assert "finished" in table[1] and source in table[1]


def test_migrate_wait_exits_1_with_the_reason_when_it_rolls_back(served, capsys):
    from dockyard.cli.main import main

    url, tokens = served
    agents = FakeAgents(url, tokens, fail_start=True)
    agents.start()
    try:
        with pytest.raises(SystemExit) as failed:
            main(["server", "migrate", "web", "--wait"])
    finally:
        agents.done.set()
        agents.join()
    assert failed.value.code == 1
    err = capsys.readouterr().err
    assert "error: migration of web failed:" in err and "no space left on device" in err


def test_live_migration_is_refused_saying_why(served, capsys):
    from dockyard.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["server", "migrate", "web", "--live"])
    assert refused.value.code == 1
    assert "criu check" in capsys.readouterr().err


def test_host_drain_wait_moves_everything_and_prints_progress(served, capsys):
    from dockyard.cli.main import main

    url, tokens = served
    host = _host_of("web")
    agents = FakeAgents(url, tokens)
    agents.start()
    try:
        main(["host", "drain", host, "--wait"])
    finally:
        agents.done.set()
        agents.join()
    err = capsys.readouterr().err
    assert f"host {host} disabled (draining)" in err and "finished" in err
    assert _host_of("web") != host and _host_of("db") != host


def test_snapshot_wait_prints_the_active_image(served, capsys):
    from dockyard.cli.main import main

    url, tokens = served
    agents = FakeAgents(url, tokens)
    agents.start()
    try:
        main(["server", "snapshot", "web", "--image", "web-1", "--wait", "-f", "json"])
    finally:
        agents.done.set()
        agents.join()
    image = json.loads(capsys.readouterr().out)
    assert image["status"] == "active" and image["digest"] == DIGEST
