"""``dockyard app|stack|release ...`` against a real server whose deploy controller
runs on its own; a small fake agent plays the hosts (healthy unless BROKEN is set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from dockyard.api.server import init
from dockyard.db.session import Database
from tests.api.servers import serving
from tests.unit.test_cli_main import HEAVY, loaded_after


class FakeAgents:
    """Every 50 ms: spawns, rebuilds and deletes done; health from the env."""

    def __init__(self, url: str, admin: str, tokens: dict[str, str]) -> None:
        self.url, self.admin, self.tokens = url, admin, tokens
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeAgents:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url) as c:
            while not self.stop.wait(0.05):
                self._pass(c)

    def _pass(self, c: httpx.Client) -> None:
        auth = {"authorization": f"Bearer {self.admin}"}
        for inst in c.get("/instances", headers=auth).json():
            host, task = inst["host"], inst["task_state"]
            if host is None or task is None:
                continue
            token = {"authorization": f"Bearer {self.tokens[host]}"}
            desired = c.get(f"/agent/hosts/{host}/desired", headers=token).json()["instances"]
            d = next((d for d in desired if d["id"] == inst["id"]), None)
            health = {"status": "unhealthy" if d and "BROKEN" in d["env"] else "healthy"}
            report: dict[str, object] = {"power_state": "running", "health": health}
            if task == "deleting":
                report = {"power_state": "nostate", "task_done": "deleting", "gone": True}
            elif task == "rebuilding" and d is not None:
                report["rebuilt_seq"] = d["rebuild_seq"]
            elif task == "spawning":
                report["task_done"] = "spawning"
            c.put(f"/agent/instances/{inst['id']}/state", headers=token, json=report)


def _setup(url: str, admin: str) -> dict[str, str]:
    tokens = {}
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"}) as c:
        c.post(
            "/networks",
            json={"name": "net", "bridge": "dyt-p1", "subnet": {"cidr": "198.18.2.0/24"}},
        ).raise_for_status()
        c.post("/flavors", json={"name": "f", "vcpus": 1, "memory_mb": 64}).raise_for_status()
        for name, ref in (("img", "x:1"), ("img2", "x:2")):
            c.post(
                "/images", json={"name": name, "source": "docker", "ref": ref}
            ).raise_for_status()
        for host in ("h1", "h2"):
            tokens[host] = c.post("/agent-tokens", json={"host": host}).json()["token"]
            httpx.post(
                f"{url}/agent/hosts",
                headers={"authorization": f"Bearer {tokens[host]}"},
                json={"name": host, "cores": 8, "memory_mb": 4096, "disk_gb": 50},
            ).raise_for_status()
    return tokens


def test_apps_and_stacks_from_the_cli(tmp_path, monkeypatch, capsys):
    from dockyard.cli.main import main

    conf = tmp_path / "app.conf"
    conf.write_text("workers=4\n")
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    with serving(db, tmp_path) as url:
        tokens = _setup(url, admin)
        monkeypatch.setenv("DOCKYARD_URL", url.removesuffix("/v1"))
        monkeypatch.setenv("DOCKYARD_TOKEN", admin)
        main(["app", "create", "shop"])
        assert "shop" in capsys.readouterr().out
        with FakeAgents(url, admin, tokens):
            main(["stack", "create", "shop/web", "--image", "img", "--flavor", "f",
                  "--network", "net", "--replicas", "2", "--env", "MODE=prod",
                  "--config-file", f"{conf}:/etc/app.conf", "--health-http", "8080/healthz",
                  "--progress-deadline", "2", "--wait"])  # fmt: skip
            capsys.readouterr()
            main(["stack", "deploy", "shop/web", "--image", "img2", "--wait"])
            out = capsys.readouterr()
            assert "succeeded" in out.out and "deploy to release 2" in out.err
            main(["stack", "show", "shop/web"])
            shown = capsys.readouterr().out
            assert "NAME" in shown and "HOST" in shown and "HEALTH" in shown and "healthy" in shown
            assert "deploy 1->2 succeeded" in shown and "events" in shown
            main(["stack", "show", "shop/web", "-f", "json"])
            st = json.loads(capsys.readouterr().out)
            assert st["ready"] == 2 and st["current_release"] == 2
            assert sorted(m["host"] for m in st["instances"]) == ["h1", "h2"]
            assert all(m["health"] == "healthy" and m["ip"] for m in st["instances"])
            with pytest.raises(SystemExit) as failed:
                main(["stack", "deploy", "shop/web", "--env", "BROKEN=1", "--wait"])
            err = capsys.readouterr().err
            assert failed.value.code == 1 and "rolled back" in err and "not ready within 2 s" in err
            main(["stack", "rollback", "shop/web", "--to", "1", "--wait"])
            capsys.readouterr()
            main(["release", "list", "shop/web"])
            lines = capsys.readouterr().out.splitlines()
            assert lines[0].split()[:3] == ["NUMBER", "IMAGE", "DIGEST"]
            results = [line.split()[-1] for line in lines[1:]]
            assert results == ["superseded", "superseded", "rolled-back", "deployed"]  # 4 is 1
            main(["stack", "endpoints", "shop/web", "-f", "nginx"])
            nginx = capsys.readouterr().out
            assert "upstream shop_web {" in nginx and nginx.count(":8080;") == 2
            main(["stack", "endpoints", "shop/web", "-f", "haproxy"])
            assert "backend shop_web" in capsys.readouterr().out
            main(["stack", "scale", "shop/web", "--replicas", "1"])
            main(["stack", "list", "shop"])
            assert "shop/web" in capsys.readouterr().out
            main(["stack", "delete", "shop/web"])
        main(["app", "delete", "shop"])
        assert "app shop deleted" in capsys.readouterr().out
    db.engine.dispose()


def test_bad_flags_are_refused_before_any_request(tmp_path, capsys, monkeypatch):
    from dockyard.cli.main import main

    monkeypatch.setenv("DOCKYARD_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("DOCKYARD_TOKEN", "t")
    base = ["stack", "create", "shop/web", "--image", "i", "--flavor", "f", "--network", "n",
            "--replicas", "1"]  # fmt: skip
    for extra, words in [
        (["--env", "NOEQUALS"], "NAME=VALUE"),
        (["--config-file", f"{tmp_path}/missing:/etc/x"], "cannot read"),
        (["--health-http", "web/healthz"], "PORT/PATH"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(base + extra)
        assert exc.value.code == 1 and words in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["stack", "show", "justone"])
    assert exc.value.code == 1 and "APP/STACK" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(base + ["--health-tcp", "1", "--health-cmd", "true"])
    assert exc.value.code == 2


def test_stack_commands_import_no_http_library_or_model():
    loaded = loaded_after("stack", "list", "shop")
    assert not {m for m in loaded if m.startswith(HEAVY)}
    assert "dockyard.cli.apps" in loaded


def _wait_for(what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := what()) is not None and found is not False:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_the_nginx_example_follows_the_endpoints_watch(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    out = tmp_path / "shop_web.conf"
    with serving(db, tmp_path) as url:
        tokens = _setup(url, admin)
        c = httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"})
        c.post("/apps", json={"name": "shop"}).raise_for_status()
        body = {"name": "web", "image": "img", "flavor": "f", "network": "net", "replicas": 2,
                "health_check": {"kind": "tcp", "port": 80}}  # fmt: skip
        st = c.post("/apps/shop/stacks", json=body).json()

        def report(member, health):
            token = {"authorization": f"Bearer {tokens[member['host']]}"}
            rep = {"power_state": "running", "task_done": "spawning", "health": health}
            httpx.put(f"{url}/agent/instances/{member['id']}/state", headers=token, json=rep)

        for member in st["instances"]:
            report(member, {"status": "healthy"})
        env = {**os.environ, "DOCKYARD_URL": url.removesuffix("/v1"), "DOCKYARD_TOKEN": admin}
        script = Path(__file__).parents[2] / "examples" / "nginx_upstream.py"
        cmd = [sys.executable, str(script), "shop/web", "--out", str(out), "--max-changes", "2"]
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: out.exists() and out.read_text().count(":80;") == 2)
            report(st["instances"][0], {"status": "unhealthy", "failures": 3})
            assert proc.wait(timeout=15) == 0
        finally:
            proc.kill()
            proc.wait()
        text = out.read_text()
        assert "upstream shop_web {" in text and text.count(":80;") == 1
        assert st["instances"][0]["ip"] not in text
        c.close()
    db.engine.dispose()
