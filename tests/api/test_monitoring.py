"""Prometheus's side of the server: http_sd targets and host metrics, behind a read-only token."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def _register(cloud, host, url, az="nova", address="198.18.0.2", labels=None):
    """Register ``host`` from ``address`` (the TCP peer the server sees)."""
    labels = {**(labels or {}), **({"dockyard.metrics": url} if url else {})}
    token = cloud.agent_token(host)
    body = {"name": host, "cores": 4, "memory_mb": 8192, "disk_gb": 100,
            "availability_zone": az, "labels": labels}  # fmt: skip
    r = _from(cloud, address).post(
        "/v1/agent/hosts", json=body, headers={"authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    return token


def _from(cloud, address):
    return TestClient(cloud.client.app, client=(address, 50000))


def test_http_sd_lists_every_host_that_serves_metrics_and_the_server(cloud):
    token = cloud.ok("POST", "/monitoring/token")["token"]
    _register(cloud, "h1", "https://198.18.0.2:9787/metrics", az="az1", address="198.18.0.2")
    _register(cloud, "h2", "http://198.18.0.3:9788/metrics", address="198.18.0.3")
    _register(cloud, "h3", None, address="198.18.0.4")  # no /metrics (older, or off)
    sd = cloud.ok("GET", "/monitoring/targets", token)
    by_job = {}
    for group in sd:
        by_job.setdefault(group["labels"]["job"], []).append(group)
    assert [g["labels"]["__metrics_path__"] for g in by_job["dockyard-server"]] == [
        "/v1/monitoring/metrics"
    ]
    agents = {g["labels"]["host"]: g for g in by_job["dockyard-agent"]}
    assert set(agents) == {"h1", "h2"}
    assert agents["h1"]["targets"] == ["198.18.0.2:9787"]
    assert agents["h1"]["labels"]["__scheme__"] == "https"
    assert agents["h1"]["labels"]["az"] == "az1"
    assert agents["h2"]["targets"] == ["198.18.0.3:9788"]
    assert agents["h2"]["labels"]["__scheme__"] == "http"


def test_a_host_cannot_have_another_address_scraped_in_its_name(cloud):
    """The agent says http(s) and a port; where it is scraped and its labels are the
    server's: the address it registered from, the database's host and az."""
    token = cloud.ok("POST", "/monitoring/token")["token"]
    _register(cloud, "h1", "https://198.18.0.2:9787/metrics", address="198.18.0.2")
    # h2 claims h1's address, another path, and an address label of its own
    _register(
        cloud, "h2", "https://198.18.0.2:9787/elsewhere", az="az2", address="198.18.0.3",
        labels={"dockyard.address": "198.18.0.2", "az": "az1", "host": "h1"},
    )
    cloud.ok("PATCH", "/hosts/h2", json={"availability_zone": "az9"})
    sd = cloud.ok("GET", "/monitoring/targets", token)
    agents = {g["labels"]["host"]: g for g in sd if g["labels"]["job"] == "dockyard-agent"}
    assert agents["h2"]["targets"] == ["198.18.0.3:9787"]
    assert agents["h2"]["labels"]["__metrics_path__"] == "/metrics"
    assert agents["h2"]["labels"]["az"] == "az9"
    assert cloud.ok("GET", "/hosts/h2")["labels"]["dockyard.address"] == "198.18.0.3"


def test_host_up_and_enabled_are_served_to_the_monitoring_token(cloud):
    token = cloud.ok("POST", "/monitoring/token")["token"]
    _register(cloud, "h1", None)
    cloud.ok("PATCH", "/hosts/h1", json={"enabled": False})
    r = cloud.call("GET", "/monitoring/metrics", token)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = {
        (s.name, s.labels["host"]): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }
    assert got[("dockyard_host_up", "h1")] == 1
    assert got[("dockyard_host_enabled", "h1")] == 0


def test_the_monitoring_token_reads_monitoring_only_and_rotates(cloud):
    old = cloud.ok("POST", "/monitoring/token")["token"]
    agent = cloud.register("h1")
    first = cloud.ok("GET", "/agent/monitoring", agent)["scrape_token_sha256"]
    r = cloud.call("GET", "/hosts", old)
    assert r.status_code == 403 and "monitoring" in r.json()["detail"]
    assert cloud.call("GET", "/images", old).status_code == 403
    assert cloud.call("POST", "/monitoring/token", old).status_code == 403
    assert cloud.call("GET", "/monitoring/targets").status_code == 200  # the admin may
    assert cloud.call("GET", "/monitoring/targets", agent).status_code == 403
    new = cloud.ok("POST", "/monitoring/token")["token"]
    assert cloud.call("GET", "/monitoring/targets", old).status_code == 401
    assert cloud.call("GET", "/monitoring/targets", new).status_code == 200
    second = cloud.ok("GET", "/agent/monitoring", agent)["scrape_token_sha256"]
    assert len(first) == len(second) == 1 and first != second
