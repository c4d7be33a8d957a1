"""POST /v1/agent/hosts/NAME/metrics-certificate: a host credential gets a certificate
from the metrics CA (which only Prometheus trusts), for its registered address only,
never one from the cloud's CA (which the CLI and agents trust for the API server)."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from dockyard import pki
from dockyard.api.app import create_app
from dockyard.api.monitoring import metrics_ca
from dockyard.api.server import init
from dockyard.db.session import Database


@pytest.fixture
def server(tmp_path):
    """An app with the cloud's CA (ca.pem, ca.key) in tmp_path/tls, as `dockyard up` makes."""
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    ca, _ = pki.ensure_ca(tmp_path / "tls")
    app = create_app(db, tmp_path, ca_file=ca)
    with TestClient(app) as client:
        yield client, admin, ca
    db.engine.dispose()


def _as(client, address):
    return TestClient(client.app, client=(address, 50000))


def _agent_token(client, admin, host):
    r = client.post(
        "/v1/agent-tokens", json={"host": host}, headers={"authorization": f"Bearer {admin}"}
    )
    assert r.status_code < 300, r.text
    return r.json()["token"]


def _register(client, token, host, address):
    body = {"name": host, "cores": 4, "memory_mb": 8192, "disk_gb": 100}
    r = _as(client, address).post(
        "/v1/agent/hosts", json=body, headers={"authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text


def _ask(client, token, host, address):
    _, csr = pki.host_key_and_csr(host)
    return _as(client, address).post(
        f"/v1/agent/hosts/{host}/metrics-certificate",
        json={"csr": csr.decode()},
        headers={"authorization": f"Bearer {token}"},
    )


def test_the_certificate_comes_from_the_metrics_ca_for_the_registered_address(server):
    client, admin, ca = server
    token = _agent_token(client, admin, "h1")
    _register(client, token, "h1", "198.18.0.2")
    r = _ask(client, token, "h1", "198.18.0.2")
    assert r.status_code == 200, r.text
    pem = r.json()["certificate"].encode()
    # a client trusting the cloud's CA (the CLI, the agents) does not take it for anything
    assert not pki.issued_by(pem, ca.read_bytes())
    assert pki.issued_by(pem, (ca.parent / "metrics-ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate(pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(names) == [x509.IPAddress(ipaddress.ip_address("198.18.0.2"))]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.OID_SERVER_AUTH]
    # Prometheus's side: the same CA, to the monitoring token
    mon = client.post("/v1/monitoring/token", headers={"authorization": f"Bearer {admin}"})
    got = client.get(
        "/v1/monitoring/metrics-ca",
        headers={"authorization": f"Bearer {mon.json()['token']}"},
    )
    assert got.status_code == 200 and got.content == (ca.parent / "metrics-ca.pem").read_bytes()


def test_a_host_asking_from_another_address_than_it_registered_from_is_refused(server):
    client, admin, _ = server
    token = _agent_token(client, admin, "h1")
    _register(client, token, "h1", "198.18.0.2")
    r = _ask(client, token, "h1", "127.0.0.1")  # e.g. the server's own address
    assert r.status_code == 409
    assert "registered from 198.18.0.2" in r.json()["detail"]


def test_before_its_first_registration_a_host_gets_the_address_it_calls_from(server):
    client, admin, _ = server
    token = _agent_token(client, admin, "h2")
    r = _ask(client, token, "h2", "198.18.0.7")
    assert r.status_code == 200 and r.json()["address"] == "198.18.0.7"


def test_a_cloud_from_before_the_metrics_ca_gets_one_beside_its_ca(tmp_path):
    ca, _ = pki.ensure_ca(tmp_path / "tls")
    assert not (tmp_path / "tls" / "metrics-ca.pem").exists()
    made = metrics_ca(ca)  # what dockyard-server does at start
    assert made == (tmp_path / "tls" / "metrics-ca.pem", tmp_path / "tls" / "metrics-ca.key")
    assert made[0].exists() and made[1].stat().st_mode & 0o077 == 0
    assert metrics_ca(tmp_path / "elsewhere" / "ca.pem") is None  # no CA key to make one


def test_no_host_gets_a_certificate_for_an_address_another_host_registered_from(server):
    """One host's credential (a compromised host, or hosts behind one NAT) must not get a
    /metrics certificate Prometheus would take for another host's target."""
    client, admin, _ = server
    t1, t2 = _agent_token(client, admin, "h1"), _agent_token(client, admin, "h2")
    _register(client, t1, "h1", "198.18.0.2")
    _register(client, t2, "h2", "198.18.0.3")
    _register(client, t2, "h2", "198.18.0.2")  # h2 calls from h1's address now
    r = _ask(client, t2, "h2", "198.18.0.2")
    assert r.status_code == 409 and "h1" in r.json()["detail"], r.text
    t3 = _agent_token(client, admin, "h3")  # not registered yet: it asks from h1's address
    r = _ask(client, t3, "h3", "198.18.0.2")
    assert r.status_code == 409 and "h1" in r.json()["detail"], r.text
    hosts = client.get("/v1/hosts", headers={"authorization": f"Bearer {admin}"}).json()
    address = {h["name"]: h["labels"].get("dockyard.address") for h in hosts}
    assert address == {"h1": "198.18.0.2", "h2": None}  # h1's own target stays h1's
