"""`server stats` / `host stats` through a real Prometheus: what the API answers is what
Prometheus scraped, scoped like every instance read, and a clear 503 without one.

The series come from a small exporter in the test that speaks the agent's metric names
(monitor/README.md): the test owns the numbers, Prometheus stores and computes them."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.db.session import Database
from dockyard.monitor import stats
from tests.api.conftest import Cloud
from tests.api.test_roles import _user
from tests.prometheus import free_port, prometheus

MIB = 1 << 20


class Exporter:
    """Serves one instance's counters growing at known rates from when it started."""

    def __init__(self, instance_id: str, host: str) -> None:
        self.started = time.time()
        labels = f'instance_id="{instance_id}",name="vm",project="p1",host="{host}",az="nova"'
        self.labels = labels
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.text().encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def text(self) -> str:
        t = time.time() - self.started
        lab = self.labels
        return (
            f'dockyard_instance_cpu_seconds_total{{{lab},mode="user"}} {0.25 * t}\n'
            f'dockyard_instance_cpu_seconds_total{{{lab},mode="system"}} {0.25 * t}\n'
            f"dockyard_instance_memory_working_set_bytes{{{lab}}} {100 * MIB}\n"
            f"dockyard_instance_network_receive_bytes_total{{{lab}}} {2048 * t}\n"
            f"dockyard_instance_network_transmit_bytes_total{{{lab}}} {1024 * t}\n"
            f'dockyard_instance_disk_read_bytes_total{{{lab},device="8:0"}} 0\n'
            f'dockyard_instance_disk_written_bytes_total{{{lab},device="8:0"}} {4096 * t}\n'
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _cloud(tmp_path, prometheus_url):
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    token = init(db)
    client = TestClient(create_app(db, tmp_path, prometheus_url=prometheus_url))
    return db, client, token


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A cloud with instance vm on h1, and a Prometheus scraping vm's series every second
    (a point per second and rates over 3 s, where a real cloud has 15 s and 60 s)."""
    tmp_path = tmp_path_factory.mktemp("stats")
    db, client, token = _cloud(tmp_path, None)
    with pytest.MonkeyPatch.context() as patch, client:
        patch.setattr(stats, "MIN_STEP", 1)
        patch.setattr(stats, "MIN_WINDOW", 3)
        cloud = Cloud(client, token)
        cloud.catalog()
        cloud.register("h1")
        member = _user(cloud, "mia", "member")
        vm = cloud.create("vm", token=member).json()
        exporter = Exporter(vm["id"], "h1")
        config = (
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: dockyard-agent\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n"
        )
        try:
            with prometheus(config, tmp_path / "prom") as url:
                client.app.state.prometheus_url = url
                yield cloud, member
        finally:
            exporter.close()
    db.engine.dispose()


def _stats_once_scraped(cloud, path, token=None):
    deadline = time.monotonic() + 30
    while True:
        answer = cloud.ok("GET", path, token)
        cpu = next(s for s in answer["series"] if s["name"] == "cpu")
        if len(cpu["points"]) >= 5 or time.monotonic() > deadline:
            return {s["name"]: s for s in answer["series"]}, answer
        time.sleep(0.5)


def test_an_instances_stats_are_what_prometheus_scraped(scraped):
    cloud, member = scraped
    series, answer = _stats_once_scraped(cloud, "/instances/vm/stats?since=60", member)
    assert answer["subject"] == "vm" and answer["since"] == 60 and answer["step"] == 1
    cpu, memory = series["cpu"], series["memory"]
    assert cpu["unit"] == "cores" and len(cpu["points"]) >= 2
    assert cpu["current"] == pytest.approx(0.5, rel=0.2)  # user + system, 0.25 s/s each
    assert memory["current"] == memory["peak"] == 100 * MIB
    assert series["net rx"]["current"] == pytest.approx(2048, rel=0.2)
    assert series["disk write"]["current"] == pytest.approx(4096, rel=0.2)
    assert series["disk read"]["peak"] == 0


def test_a_hosts_stats_sum_its_instances_and_are_for_admins(scraped):
    cloud, member = scraped
    series, answer = _stats_once_scraped(cloud, "/hosts/h1/stats?since=60")
    assert answer["subject"] == "h1"
    assert series["cpu"]["current"] == pytest.approx(0.5, rel=0.2)
    assert series["tasks"]["points"] == []  # this exporter serves no host series
    assert series["tasks"]["current"] is None
    assert cloud.call("GET", "/hosts/h1/stats", member).status_code == 403


def test_another_projects_instance_is_not_found_and_bad_ranges_are_refused(scraped):
    cloud, _ = scraped
    other = _user(cloud, "olga", "member", project="p2")
    assert cloud.call("GET", "/instances/vm/stats", other).status_code == 404
    for since in ("59", "99999999", "1h"):
        r = cloud.call("GET", f"/instances/vm/stats?since={since}")
        assert r.status_code == 422, r.text
    assert cloud.call("GET", "/hosts/nope/stats").status_code == 404


def test_without_prometheus_the_answer_says_how_to_set_it_up(tmp_path):
    db, client, token = _cloud(tmp_path, None)
    with client:
        cloud = Cloud(client, token)
        cloud.catalog()
        cloud.register("h1")
        cloud.create("vm")
        r = cloud.call("GET", "/instances/vm/stats")
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "--prometheus-url" in r.json()["detail"]
        client.app.state.prometheus_url = f"http://127.0.0.1:{free_port()}"  # nothing there
        r = cloud.call("GET", "/instances/vm/stats")
        assert r.status_code == 503 and "did not answer" in r.json()["detail"]
    db.engine.dispose()
