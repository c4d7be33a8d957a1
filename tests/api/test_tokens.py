"""Tokens and users: revocation, expiry and disabling hold on every server at once."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.db import models as m
from dockyard.db.session import Database
from tests.api.conftest import Cloud
from tests.api.servers import serving


@pytest.fixture
def two_servers(backend_db, tmp_path):
    """Two server apps, each with its own engine, on one database."""
    admin = init(backend_db)
    other = Database(backend_db.url)
    with (
        TestClient(create_app(backend_db, tmp_path / "a")) as a,
        TestClient(create_app(other, tmp_path / "b")) as b,
    ):
        yield Cloud(a, admin), Cloud(b, admin)
    other.engine.dispose()


def _alice(cloud, role="member"):
    cloud.ok("POST", "/projects", json={"name": "p1"})
    return cloud.ok("POST", "/users", json={"name": "alice", "project": "p1", "role": role})


def _token_id(cloud, token):
    return next(t["id"] for t in cloud.ok("GET", "/tokens", token))


def test_a_token_revoked_on_one_server_is_refused_by_the_other_at_once(two_servers):
    a, b = two_servers
    alice = _alice(a)["token"]
    spare = a.ok("POST", "/tokens", alice)["token"]
    assert b.ok("GET", "/whoami", alice)["name"] == "alice"  # b has seen it
    assert a.ok("GET", "/whoami", alice)["name"] == "alice"
    a.ok("DELETE", f"/tokens/{_token_id(a, alice)}")
    for server in (a, b):
        r = server.call("GET", "/whoami", alice)
        assert r.status_code == 401 and "not known" in r.json()["detail"]
        r = server.call("POST", "/tokens", alice)  # cannot mint a successor
        assert r.status_code == 401
    assert b.ok("GET", "/whoami", spare)["name"] == "alice"  # the user's other tokens stand
    assert [t["id"] for t in a.ok("GET", "/tokens", spare)] == [_token_id(a, spare)]


@pytest.mark.slow
def test_revoking_while_requests_run_refuses_every_request_after_the_answer(backend_db, tmp_path):
    admin = init(backend_db)
    other = Database(backend_db.url)
    with serving(backend_db, tmp_path / "a") as url_a, serving(other, tmp_path / "b") as url_b:
        with httpx.Client(headers={"authorization": f"Bearer {admin}"}) as c:
            c.post(f"{url_a}/projects", json={"name": "p1"}).raise_for_status()
            alice = c.post(f"{url_a}/users", json={"name": "alice", "project": "p1"}).json()[
                "token"
            ]
            token_id = c.get(f"{url_a}/tokens").json()[-1]["id"]
        stop, results = threading.Event(), []

        def hammer(url: str) -> None:
            with httpx.Client(headers={"authorization": f"Bearer {alice}"}, timeout=30) as h:
                while not stop.is_set():
                    started = time.monotonic()
                    code = h.get(f"{url}/whoami").status_code
                    results.append((started, code))

        with ThreadPoolExecutor(8) as pool:
            for i in range(8):
                pool.submit(hammer, (url_a, url_b)[i % 2])
            time.sleep(0.5)
            with httpx.Client(headers={"authorization": f"Bearer {alice}"}) as h:
                h.delete(f"{url_a}/tokens/{token_id}").raise_for_status()
            answered = time.monotonic()
            time.sleep(1.0)
            stop.set()
    other.engine.dispose()
    before = [code for t, code in results if t < answered]
    after = [code for t, code in results if t > answered]
    assert before and 200 in before
    assert len(after) > 20 and set(after) == {401}, sorted(set(after))


def test_an_expired_token_gets_401_saying_how_to_get_a_new_one(two_servers, backend_db):
    a, b = two_servers
    alice = _alice(a)["token"]
    out = a.ok("POST", "/tokens", alice, json={"expires_in": 30 * 86400})
    assert out["expires_at"] is not None
    short = out["token"]
    assert b.ok("GET", "/whoami", short)["name"] == "alice"
    listed = {t["id"]: t for t in a.ok("GET", "/tokens", alice)}
    assert listed[out["id"]]["expires_at"] and listed[_token_id(a, alice)]["expires_at"] is None
    with backend_db.session() as s:  # a month later
        s.execute(
            update(m.Token)
            .where(m.Token.id == out["id"])
            .values(expires_at=m.now() - timedelta(seconds=1))
        )
    for server in (a, b):
        r = server.call("GET", "/whoami", short)
        assert r.status_code == 401
        assert "expired" in r.json()["detail"] and "dockyard token create" in r.json()["detail"]
        assert server.call("POST", "/tokens", short).status_code == 401
    assert a.ok("GET", "/whoami", alice)["name"] == "alice"


def test_a_token_never_outlives_the_token_that_made_it(two_servers):
    """A leaked short-lived token must not mint a permanent one."""
    a, _ = two_servers
    alice = _alice(a)["token"]
    short = a.ok("POST", "/tokens", alice, json={"expires_in": 3600})
    child = a.ok("POST", "/tokens", short["token"])
    longer = a.ok("POST", "/tokens", short["token"], json={"expires_in": 30 * 86400})
    shorter = a.ok("POST", "/tokens", short["token"], json={"expires_in": 600})
    listed = {t["id"]: t["expires_at"] for t in a.ok("GET", "/tokens", alice)}
    assert listed[child["id"]] == listed[short["id"]] == listed[longer["id"]] is not None
    assert listed[shorter["id"]] < listed[short["id"]]


@pytest.mark.parametrize("seconds", [0, 59, 10**12, -5])
def test_a_token_lifetime_out_of_bounds_is_422(cloud, seconds):
    r = cloud.call("POST", "/tokens", json={"expires_in": seconds})
    assert r.status_code == 422 and "expires_in" in r.json()["detail"]


def test_a_disabled_user_is_refused_at_once_on_every_server(two_servers):
    a, b = two_servers
    alice = _alice(a)["token"]
    assert b.ok("GET", "/whoami", alice)["name"] == "alice"
    out = a.ok("PATCH", "/users/alice", json={"disabled": True})
    assert out["disabled"] is True
    for server in (a, b):
        r = server.call("GET", "/instances", alice)
        assert r.status_code == 403
        assert "disabled" in r.json()["detail"] and "user enable alice" in r.json()["detail"]
        assert server.call("POST", "/tokens", alice).status_code == 403
    assert [u["disabled"] for u in a.ok("GET", "/users") if u["name"] == "alice"] == [True]
    a.ok("PATCH", "/users/alice", json={"disabled": False})
    assert b.ok("GET", "/whoami", alice)["name"] == "alice"


def test_only_admins_disable_users_and_nobody_disables_themselves(cloud):
    alice = _alice(cloud)["token"]
    r = cloud.call("PATCH", "/users/alice", alice, json={"disabled": True})
    assert r.status_code == 403
    r = cloud.call("PATCH", "/users/admin", json={"disabled": True})
    assert r.status_code == 409 and "yourself" in r.json()["detail"]
    r = cloud.call("PATCH", "/users/nobody", json={"disabled": True})
    assert r.status_code == 404
    assert cloud.ok("GET", "/whoami")["name"] == "admin"


def test_the_cli_creates_expiring_tokens_lists_expiry_and_disables_users(
    tmp_path, monkeypatch, capsys
):
    from dockyard.cli.main import main

    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    with serving(db, tmp_path) as url:
        monkeypatch.setenv("DOCKYARD_URL", url.removesuffix("/v1"))
        monkeypatch.setenv("DOCKYARD_TOKEN", admin)
        main(["token", "create", "--expires", "30d"])
        minted = capsys.readouterr().out.strip()
        main(["token", "list", "-f", "json"])
        listed = json.loads(capsys.readouterr().out)
        expiring = [t for t in listed if t["expires_at"]]
        assert len(expiring) == 1 and len(listed) == 2
        days = datetime.fromisoformat(expiring[0]["expires_at"]) - datetime.fromisoformat(
            expiring[0]["created_at"]
        )
        assert abs(days.total_seconds() - 30 * 86400) < 60
        main(["token", "list"])
        assert "EXPIRES" in capsys.readouterr().out
        main(["project", "create", "p1"])
        main(["user", "create", "bob", "--project", "p1"])
        bob = capsys.readouterr().out.strip().splitlines()[-1]
        main(["user", "disable", "bob"])
        assert (
            httpx.get(f"{url}/whoami", headers={"authorization": f"Bearer {bob}"}).status_code
            == 403
        )
        main(["user", "list"])
        assert "disabled" in capsys.readouterr().out
        main(["user", "enable", "bob"])
        assert httpx.get(f"{url}/whoami", headers={"authorization": f"Bearer {minted}"}).is_success
        with pytest.raises(SystemExit) as exit_:
            main(["token", "create", "--expires", "soon"])
        assert exit_.value.code == 1 and "30d" in capsys.readouterr().err
    db.engine.dispose()
