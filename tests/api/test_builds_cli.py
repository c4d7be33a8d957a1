"""``dockyard app hook|hooks|unhook`` and ``dockyard build ...`` against a real server;
a small fake build agent (HTTP with its host's token) carries the orders out."""

from __future__ import annotations

import threading

import httpx
import pytest

from dockyard.api.app import create_app
from dockyard.api.registry import RegistrySettings
from dockyard.api.server import init
from dockyard.db.session import Database
from tests.api.build_helpers import REGISTRY, REPO, SHA, done_body
from tests.api.servers import serving_app
from tests.unit.test_cli_main import HEAVY, loaded_after


class FakeBuilder:
    """Host b1's agent: takes each order, logs three lines, then done (or failure when
    the ref is ``broken``)."""

    def __init__(self, url: str, token: str) -> None:
        self.c = httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"})
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeBuilder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.c.close()

    def _run(self) -> None:
        seen: set[str] = set()
        while not self.stop.is_set():
            r = self.c.get("/agent/hosts/b1/builds", params={"wait": 0.2}, timeout=10)
            for order in r.json()["orders"]:
                if order["id"] not in seen:
                    seen.add(order["id"])
                    self._build(order)

    def _build(self, order: dict[str, str]) -> None:
        base = f"/agent/builds/{order['id']}"
        self.c.post(base + "/start").raise_for_status()
        offset = 0
        for line in (b"cloning\n", b"building\n", b"pushing\n"):
            self.c.post(base + "/log", params={"offset": offset}, content=line)
            offset += len(line)
            self.stop.wait(0.05)
        if order["ref"] == "broken":
            self.c.post(base + "/failure", json={"error": "RUN make: exit 2"})
        else:
            self.c.post(base + "/done", json=done_body()).raise_for_status()


def _setup(url: str, admin: str) -> str:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"}) as c:
        net = {"name": "net", "bridge": "dyt-b1", "subnet": {"cidr": "198.18.3.0/24"}}
        c.post("/networks", json=net).raise_for_status()
        c.post("/flavors", json={"name": "f", "vcpus": 1, "memory_mb": 64}).raise_for_status()
        c.post("/images", json={"name": "img", "source": "docker", "ref": "x:1"})
        token = c.post("/agent-tokens", json={"host": "b1"}).json()["token"]
        httpx.post(f"{url}/agent/hosts", headers={"authorization": f"Bearer {token}"},
                   json={"name": "b1", "cores": 8, "memory_mb": 4096, "disk_gb": 50,
                         "labels": {"dockyard.builds": "6,7"}}).raise_for_status()  # fmt: skip
        c.post("/apps", json={"name": "shop"}).raise_for_status()
        body = {"name": "web", "image": "img", "flavor": "f", "network": "net", "replicas": 1}
        c.post("/apps/shop/stacks", json=body).raise_for_status()
    return token


def test_hooks_and_builds_from_the_cli(tmp_path, monkeypatch, capsys):
    from dockyard.cli.main import main

    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    app = create_app(db, tmp_path, registry=RegistrySettings(REGISTRY), build_check_every=None)
    with serving_app(app) as url:
        token = _setup(url, admin)
        monkeypatch.setenv("DOCKYARD_URL", url.removesuffix("/v1"))
        monkeypatch.setenv("DOCKYARD_TOKEN", admin)
        main(["app", "hook", "shop", "--repo", REPO, "--branch", "main", "--stack", "web"])
        out = capsys.readouterr().out
        assert f"webhook URL: {url}/apps/shop/hooks/git" in out
        secret = out.split("secret:")[1].split()[0]
        assert len(secret) >= 16
        main(["app", "hooks", "shop"])
        listed = capsys.readouterr().out
        assert REPO in listed and "main" in listed and secret not in listed
        hook_id = listed.splitlines()[1].split()[0]
        with FakeBuilder(url, token):
            main(["build", "start", "shop", "--ref", SHA, "--follow"])
            run = capsys.readouterr()
            assert run.out == "cloning\nbuilding\npushing\n"
            assert "succeeded: admin/shop:20261126-0123456" in run.err
            main(["build", "start", "shop", "--ref", "broken", "--no-deploy"])
            build_id = capsys.readouterr().out.split("id")[1].split()[0]
            with pytest.raises(SystemExit) as failed:
                main(["build", "logs", build_id, "--follow"])
            run = capsys.readouterr()
            assert failed.value.code == 1 and "failed: RUN make: exit 2" in run.err
            assert "pushing" in run.out
        main(["build", "list", "shop"])
        rows = capsys.readouterr().out.splitlines()
        assert rows[0].split()[:4] == ["ID", "APP", "REF", "COMMIT"] and len(rows) == 3
        assert "failed" in rows[1] and "succeeded" in rows[2]
        main(["build", "show", build_id, "-f", "json"])
        assert '"status": "failed"' in capsys.readouterr().out
        main(["build", "start", "shop", "--ref", "main"])  # no agent now: stays queued
        queued = capsys.readouterr().out.split("id")[1].split()[0]
        main(["build", "cancel", queued])
        assert "cancelled" in capsys.readouterr().out
        main(["app", "unhook", "shop", hook_id])
        assert "deleted" in capsys.readouterr().out
        with pytest.raises(SystemExit):
            main(["build", "start", "shop", "--ref", "main"])
        assert "no hook to build from" in capsys.readouterr().err
    db.engine.dispose()


def test_build_commands_import_no_http_library_or_model():
    loaded = loaded_after("build", "list")
    assert not {m for m in loaded if m.startswith(HEAVY)}
    assert "dockyard.cli.builds" in loaded
