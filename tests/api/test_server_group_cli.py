"""``dockyard server-group ...`` and ``server create --group`` against a real server."""

from __future__ import annotations

import json

import httpx
import pytest

from dockyard.api.server import init
from dockyard.db.session import Database
from tests.api.servers import serving
from tests.unit.test_cli_main import HEAVY, loaded_after


def _setup(url: str, admin: str) -> None:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"}) as c:
        c.post(
            "/networks",
            json={"name": "net", "bridge": "dyt-g1", "subnet": {"cidr": "198.18.1.0/24"}},
        ).raise_for_status()
        c.post("/flavors", json={"name": "f", "vcpus": 1, "memory_mb": 64}).raise_for_status()
        c.post("/images", json={"name": "img", "source": "docker", "ref": "x:1"}).raise_for_status()
        for host in ("h1", "h2"):
            agent = c.post("/agent-tokens", json={"host": host}).json()["token"]
            httpx.post(
                f"{url}/agent/hosts",
                headers={"authorization": f"Bearer {agent}"},
                json={"name": host, "cores": 8, "memory_mb": 4096, "disk_gb": 50},
            ).raise_for_status()


def test_server_groups_from_the_cli(tmp_path, monkeypatch, capsys):
    from dockyard.cli.main import main

    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    with serving(db, tmp_path) as url:
        _setup(url, admin)
        monkeypatch.setenv("DOCKYARD_URL", url.removesuffix("/v1"))
        monkeypatch.setenv("DOCKYARD_TOKEN", admin)
        main(["server-group", "create", "web", "--policy", "anti-affinity"])
        assert "anti-affinity" in capsys.readouterr().out
        flags = ["--image", "img", "--flavor", "f", "--network", "net", "--group", "web"]
        for name in ("a", "b"):
            main(["server", "create", name, *flags, "-f", "json"])
            assert json.loads(capsys.readouterr().out)["group"] == "web"
        with pytest.raises(SystemExit) as refused:
            main(["server", "create", "c", *flags])
        err = capsys.readouterr().err
        assert refused.value.code == 1
        assert "anti-affinity: 2 hosts already hold a member of web" in err
        main(["server", "list"])
        table = capsys.readouterr().out.splitlines()
        host_col = table[0].index("HOST")
        assert sorted(row[host_col:].split()[0] for row in table[1:]) == ["h1", "h2"]
        main(["server-group", "list"])
        out = capsys.readouterr().out
        assert "web" in out and "a,b" in out and "h1,h2" in out
        main(["server-group", "show", "web", "-f", "json"])
        assert json.loads(capsys.readouterr().out)["hosts"] == {"h1": ["a"], "h2": ["b"]}
        with pytest.raises(SystemExit):
            main(["server-group", "delete", "web"])
        assert "still has members (a, b)" in capsys.readouterr().err
        main(["host", "list"])
        out = capsys.readouterr().out
        assert "DISK_GB(used/total)" in out and "1/8" in out and "64/4096" in out
    db.engine.dispose()


def test_a_bad_policy_is_refused_before_any_request(capsys):
    from dockyard.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["server-group", "create", "web", "--policy", "sideways"])
    assert exc.value.code == 2 and "soft-anti-affinity" in capsys.readouterr().err


def test_server_group_commands_import_no_http_library_or_model():
    loaded = loaded_after("server-group", "list")
    assert not {m for m in loaded if m.startswith(HEAVY)}
    assert "dockyard.cli.groups" in loaded and "dockyard.cli.servers" not in loaded
