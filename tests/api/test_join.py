"""A host joins with a one-time token (host add / join) and leaves (host remove)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from dockyard import pki
from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.db import models as m
from tests.api.conftest import Cloud

HOST = {"cores": 4, "memory_mb": 8192, "disk_gb": 100}


@pytest.fixture
def tls_cloud(tmp_path, backend_db):
    """A cloud whose server has a CA (GET /v1/ca, the pin in join tokens), on SQLite
    and on PostgreSQL."""
    ca, _ = pki.ensure_ca(tmp_path / "tls")
    token = init(backend_db)
    with TestClient(create_app(backend_db, tmp_path, ca_file=ca)) as client:
        c = Cloud(client, token)
        c.db, c.ca = backend_db, ca
        yield c


def _join(cloud, token):
    return cloud.client.post("/v1/join", json={"token": token})


def test_a_joined_host_gets_its_own_agent_token_and_the_admins_zone(tls_cloud):
    made = tls_cloud.ok("POST", "/join-tokens", json={"host": "h2", "availability_zone": "az2"})
    assert made["ca_hash"] == pki.ca_hash(tls_cloud.ca.read_bytes())
    r = _join(tls_cloud, made["token"])
    assert r.status_code == 200, r.text
    joined = r.json()
    assert (joined["host"], joined["availability_zone"]) == ("h2", "az2")
    agent = joined["token"]
    body = {"name": "h2", "availability_zone": joined["availability_zone"], **HOST}
    tls_cloud.ok("POST", "/agent/hosts", agent, json=body)
    tls_cloud.ok("POST", "/agent/hosts/h2/heartbeat", agent)
    assert [(h["name"], h["availability_zone"]) for h in tls_cloud.ok("GET", "/hosts")] == [
        ("h2", "az2")
    ]
    # the join token itself is no API credential, and is stored hashed only
    assert tls_cloud.call("GET", "/hosts", made["token"]).status_code == 401
    with tls_cloud.db.session(write=False) as s:
        assert made["token"] not in {t.token_hash for t in s.scalars(select(m.JoinToken))}


def test_a_reused_token_is_refused_saying_what_to_do(tls_cloud):
    made = tls_cloud.ok("POST", "/join-tokens", json={"host": "h2"})
    assert _join(tls_cloud, made["token"]).status_code == 200
    r = _join(tls_cloud, made["token"])
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "already used" in r.json()["detail"]
    assert "`dockyard host add h2`" in r.json()["detail"]


def test_an_expired_token_is_refused(tls_cloud):
    made = tls_cloud.ok("POST", "/join-tokens", json={"host": "h2", "expires_in": 60})
    with tls_cloud.db.session() as s:
        s.execute(update(m.JoinToken).values(expires_at=m.now() - timedelta(seconds=1)))
    r = _join(tls_cloud, made["token"])
    assert r.status_code == 401
    assert "expired" in r.json()["detail"] and "`dockyard host add h2`" in r.json()["detail"]


def test_a_token_expires_in_an_hour_by_default(tls_cloud):
    made = tls_cloud.ok("POST", "/join-tokens", json={"host": "h2"})
    with tls_cloud.db.session(write=False) as s:
        row = s.scalar(select(m.JoinToken))
        assert timedelta(minutes=59) < row.expires_at - row.created_at <= timedelta(hours=1)
    assert made["expires_at"]


def test_a_wrong_token_is_refused(tls_cloud):
    tls_cloud.ok("POST", "/join-tokens", json={"host": "h2"})
    r = _join(tls_cloud, "dyj_not-a-token")
    assert r.status_code == 401
    assert "ask an admin for a new token with `dockyard host add" in r.json()["detail"]


def test_only_admins_make_join_tokens(tls_cloud):
    agent = tls_cloud.agent_token("h1")
    r = tls_cloud.call("POST", "/join-tokens", agent, json={"host": "h9"})
    assert r.status_code == 403
    assert tls_cloud.client.post("/v1/join-tokens", json={"host": "h9"}).status_code == 401


def test_the_ca_is_served_without_a_credential(tls_cloud):
    r = tls_cloud.client.get("/v1/ca")
    assert r.status_code == 200 and r.content == tls_cloud.ca.read_bytes()


def test_a_server_without_a_ca_says_so(cloud):
    r = cloud.client.get("/v1/ca")
    assert r.status_code == 404 and "--tls-ca" in r.json()["detail"]
    assert cloud.ok("POST", "/join-tokens", json={"host": "h2"})["ca_hash"] is None


def test_host_remove_is_refused_while_instances_live_there(cloud):
    cloud.catalog()
    agent = cloud.register("h1")
    for name in ("web1", "web2"):
        assert cloud.create(name).status_code < 300
    r = cloud.call("DELETE", "/hosts/h1")
    assert r.status_code == 409, r.text
    assert "web1" in r.json()["detail"] and "web2" in r.json()["detail"]
    assert cloud.ok("POST", "/agent/hosts/h1/heartbeat", agent)  # still there, still trusted


def test_host_remove_revokes_the_hosts_credential(cloud):
    cloud.catalog()
    agent = cloud.register("h1")
    made = cloud.ok("POST", "/join-tokens", json={"host": "h1"})
    server = cloud.create("gone").json()
    cloud.ok("DELETE", f"/instances/{server['id']}")
    report = {"power_state": "shutdown", "task_done": "deleting", "gone": True}
    cloud.ok("PUT", f"/agent/instances/{server['id']}/state", agent, json=report)
    r = cloud.call("DELETE", "/hosts/h1")
    assert r.status_code == 200, r.text
    gone = r.json()
    assert (gone["registered"], gone["agent_tokens_revoked"], gone["join_tokens_revoked"]) == (
        True,
        1,
        1,
    )
    assert gone["detail"] == "removed host h1; revoked 1 agent token and 1 unused join token"
    assert cloud.ok("GET", "/hosts") == []
    assert cloud.call("POST", "/agent/hosts/h1/heartbeat", agent).status_code == 401
    assert _join(cloud, made["token"]).status_code == 401  # its unused join token is gone too
    assert cloud.call("DELETE", "/hosts/h1").status_code == 404


def test_host_remove_revokes_the_token_of_a_host_that_joined_but_never_registered(tls_cloud):
    """Its agent token exists and no host row does: remove finds and revokes it, says
    so, and answers 404 only once neither a host nor a credential is left."""
    made = tls_cloud.ok("POST", "/join-tokens", json={"host": "h2"})
    agent = _join(tls_cloud, made["token"]).json()["token"]
    assert tls_cloud.ok("GET", "/hosts") == []
    r = tls_cloud.call("DELETE", "/hosts/h2")
    assert r.status_code == 200, r.text
    gone = r.json()
    assert (gone["registered"], gone["agent_tokens_revoked"]) == (False, 1)
    assert gone["detail"] == (
        "host h2 joined but never registered: no host to remove; revoked 1 agent token"
    )
    body = {"name": "h2", "availability_zone": "nova", **HOST}
    assert tls_cloud.call("POST", "/agent/hosts", agent, json=body).status_code == 401
    r = tls_cloud.call("DELETE", "/hosts/h2")
    assert r.status_code == 404 and "holds no credential" in r.json()["detail"]
    # a host that never joined: its join token is the credential
    pending = tls_cloud.ok("POST", "/join-tokens", json={"host": "h3"})
    gone = tls_cloud.ok("DELETE", "/hosts/h3")
    assert gone["detail"] == "host h3 never joined: no host to remove; revoked 1 unused join token"
    assert _join(tls_cloud, pending["token"]).status_code == 401


def test_a_rejoined_host_keeps_only_its_new_credential(tls_cloud):
    """A reinstalled host, or one whose credential leaked, joins again: the old agent
    token stops working at once."""
    first = _join(tls_cloud, tls_cloud.ok("POST", "/join-tokens", json={"host": "h2"})["token"])
    old = first.json()["token"]
    tls_cloud.ok("POST", "/agent/hosts", old, json={"name": "h2", **HOST})
    again = _join(tls_cloud, tls_cloud.ok("POST", "/join-tokens", json={"host": "h2"})["token"])
    new = again.json()["token"]
    assert (
        tls_cloud.call("POST", "/agent/hosts", old, json={"name": "h2", **HOST}).status_code == 401
    )
    tls_cloud.ok("POST", "/agent/hosts", new, json={"name": "h2", **HOST})
