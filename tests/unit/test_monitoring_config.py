"""Prometheus's and Alertmanager's configuration as Dockyard renders it, checked by their
own tools, and the inhibition it sets up, shown by a real Alertmanager."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dockyard.lab.procs import free_port, wait_for
from dockyard.monitor import config, rules, yamltext
from dockyard.monitor.setup import Setup

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def _scrape(tmp_path: Path, **kw: Any) -> config.Scrape:
    (tmp_path / "token").write_text("t0ken\n")
    (tmp_path / "rules.yml").write_text(yamltext.dump(rules.render()))
    return config.Scrape(
        server_url="https://198.19.0.1:8787/", token_file=str(tmp_path / "token"),
        rules_file=str(tmp_path / "rules.yml"), alertmanager="127.0.0.1:9093", **kw,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")
def test_prometheus_config_passes_promtool_check_config(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    (tmp_path / "metrics-ca.pem").write_text("")
    doc = config.prometheus(
        _scrape(tmp_path, ca_file=str(tmp_path / "ca.pem"),
                metrics_ca_file=str(tmp_path / "metrics-ca.pem"))
    )  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yamltext.dump(doc))
    out = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 17 rules found" in out.stdout
    sd = doc["scrape_configs"][0]["http_sd_configs"][0]
    assert sd["url"] == "https://198.19.0.1:8787/v1/monitoring/targets"
    assert sd["authorization"]["credentials_file"] == str(tmp_path / "token")
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    # the server is verified with the cloud's CA, the agents with the metrics CA only
    assert jobs["dockyard-server"]["tls_config"]["ca_file"] == str(tmp_path / "ca.pem")
    assert jobs["dockyard-agent"]["tls_config"]["ca_file"] == str(tmp_path / "metrics-ca.pem")
    assert jobs["dockyard-agent"]["http_sd_configs"][0]["tls_config"]["ca_file"] == str(
        tmp_path / "ca.pem"
    )
    assert all(j["honor_labels"] is False for j in jobs.values())


PROMETHEUS = shutil.which("prometheus")


class _FakeCloud(BaseHTTPRequestHandler):
    """An http_sd endpoint listing itself as an agent (host h1, az az1) and as the
    server, and an agent whose /metrics lies about its host and az."""

    def do_GET(self) -> None:  # noqa: N802
        me = f"127.0.0.1:{self.server.server_port}"
        if self.path.startswith("/v1/monitoring/targets"):
            body = json.dumps([
                {"targets": [me], "labels": {"job": "dockyard-agent", "host": "h1", "az": "az1",
                                             "__scheme__": "http", "__metrics_path__": "/metrics"}},
                {"targets": [me], "labels": {"job": "dockyard-server", "__scheme__": "http",
                                             "__metrics_path__": "/v1/monitoring/metrics"}},
            ])  # fmt: skip
        elif self.path == "/metrics":
            body = ('dockyard_host_tasks{host="h9",az="az9"} 5\n'
                    'dockyard_instance_running{instance_id="i-1",name="web",project="p",'
                    'host="h9",az="az9"} 1\n')  # fmt: skip
        else:
            body = 'dockyard_host_up{host="h2",az="az2"} 1\n'
        data = body.encode()
        self.send_response(200)
        kind = "application/json" if body.startswith("[") else "text/plain; version=0.0.4"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.mark.skipif(PROMETHEUS is None, reason="needs prometheus")
def test_an_agent_cannot_label_its_series_as_another_host(tmp_path: Path) -> None:
    """A real Prometheus on the rendered configuration: the agent's series carry the host
    and az of the target the server gave (never what the agent says, not even as
    exported_host), the server's own series keep theirs."""
    fake = ThreadingHTTPServer(("127.0.0.1", 0), _FakeCloud)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    scrape = _scrape(tmp_path, interval="1s")
    scrape = dataclasses.replace(scrape, server_url=f"http://127.0.0.1:{fake.server_port}")
    (tmp_path / "prometheus.yml").write_text(yamltext.dump(config.prometheus(scrape)))
    port = free_port()
    proc = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
    )  # fmt: skip
    try:

        def series(query: str) -> list[dict[str, str]] | None:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query",
                              params={"query": query}, timeout=2)  # fmt: skip
            except httpx.TransportError:
                return None
            found = [x["metric"] for x in r.json()["data"]["result"]] if r.is_success else []
            return found or None

        tasks = wait_for(lambda: series("dockyard_host_tasks"), 30, "a scrape of the agent")
        running = wait_for(lambda: series("dockyard_instance_running"), 10, "the instance")
        up = wait_for(lambda: series("dockyard_host_up"), 10, "a scrape of the server")
    finally:
        proc.terminate()
        proc.wait(10)
        fake.shutdown()
    for got in (tasks[0], running[0]):
        assert (got["host"], got["az"], got["job"]) == ("h1", "az1", "dockyard-agent")
        assert not {"exported_host", "exported_az"} & set(got)
    assert running[0]["instance_id"] == "i-1"  # the agent's own labels stay
    assert (up[0]["host"], up[0]["az"], up[0]["job"]) == ("h2", "az2", "dockyard-server")


@pytest.mark.skipif(shutil.which("amtool") is None, reason="needs amtool")
@pytest.mark.parametrize("with_receiver", [False, True])
def test_alertmanager_config_passes_amtool_check_config(
    tmp_path: Path, with_receiver: bool
) -> None:
    """Today's default (a route to a receiver that drops) and the seam the receivers
    from the database fill (a webhook receiver, a route by severity)."""
    receivers = [{"name": "ops", "webhook_configs": [{"url": "http://198.18.0.9/hook"}]}]
    routes = [{"receiver": "ops", "matchers": ['severity="critical"']}]
    doc = config.alertmanager(*((receivers, routes) if with_receiver else ()))
    (tmp_path / "alertmanager.yml").write_text(yamltext.dump(doc))
    out = subprocess.run(
        ["amtool", "check-config", str(tmp_path / "alertmanager.yml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert " - 2 inhibit rules" in out.stdout
    assert f" - {2 if with_receiver else 1} receivers" in out.stdout


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if ALERTMANAGER is None:
        pytest.skip("needs prometheus-alertmanager")
    (tmp_path / "am.yml").write_text(
        yamltext.dump(config.alertmanager(grouping=config.Grouping(group_wait="1s")))
    )
    port = free_port()
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}",
         f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "am.log").open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 30, "alertmanager to answer")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _alert(alert: str, /, **labels: str) -> dict[str, Any]:
    rule = next(r for r in rules.all_rules() if r.alert == alert)
    extra = {"outage": "host"} if rule.outage else {}
    return {"labels": {"alertname": alert, "severity": rule.severity, "scope": rule.scope,
                       **extra, **labels}}  # fmt: skip


def test_host_down_inhibits_its_instances_alerts(alertmanager: str) -> None:
    """h1 is down: its instance's OOM and its agent-down alerts are inhibited; the same
    alert on h2, whose host is up, is not."""
    alerts = [
        _alert("DockyardHostDown", host="h1", az="az1"),
        _alert("DockyardAgentDown", host="h1", az="az1", instance="198.19.0.11:9180"),
        _alert("DockyardInstanceOOMKill", host="h1", az="az1", instance_id="i-1", name="web1"),
        _alert("DockyardInstanceOOMKill", host="h2", az="az1", instance_id="i-2", name="web2"),
        # gauge alerts kept firing (keep_firing_for) through the outage, as they were
        _alert("DockyardProcessDown", host="h1", az="az1", instance_id="i-1", process="app"),
        _alert("DockyardHostTasksNearPidMax", host="h1", az="az1"),
    ]
    httpx.post(f"{alertmanager}/api/v2/alerts", json=alerts, timeout=5).raise_for_status()

    def states() -> dict[str, list[str]] | None:
        got = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        found = {f"{a['labels']['alertname']}@{a['labels']['host']}": a["status"]["inhibitedBy"]
                 for a in got}  # fmt: skip
        return found if len(found) == 6 else None

    found = wait_for(states, 10, "alertmanager to hold the 6 alerts")
    time.sleep(1)  # inhibition is computed on read: read once more after settling
    found = states() or found
    assert found["DockyardHostDown@h1"] == []
    assert found["DockyardAgentDown@h1"] != []
    assert found["DockyardInstanceOOMKill@h1"] != []
    assert found["DockyardInstanceOOMKill@h2"] == []
    assert found["DockyardProcessDown@h1"] != []
    assert found["DockyardHostTasksNearPidMax@h1"] != []


def test_yaml_text_reads_back_as_written() -> None:
    doc = {
        "a": "null", "b": "yes", "c": "1m", "d": 'up{job="x"} == 0', "e": [], "f": {},
        "g": ["x", 'y="z"'], "h": [{"name": "n", "k": [{"deep": True}]}], "i": 0.5,
        "j": "{{ $labels.host }}: 90 %", "k": None, "l": "line\nbreak",
        "m": "/\x8e\x12\u2028\U0010d8bb\U0001d24a é",  # controls YAML forbids raw
    }  # fmt: skip
    assert yaml.safe_load(yamltext.dump(doc)) == doc
    assert yaml.safe_load(yamltext.dump(rules.render())) == rules.render()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"prometheus_url": "http://127.0.0.1:1"}, "server_url is missing"),
        ({"server_url": "x", "prometheus_url": "y", "alertmanager_url": "z", "interval": "1"},
         "interval must be a Prometheus duration"),
        ({"server_url": "x", "prometheus_url": "y", "alertmanager_url": "z",
          "tuning": {"DockyardHostDown": {"for": "1 minute"}}}, "Prometheus duration like 30s"),
    ],
)  # fmt: skip
def test_setup_says_what_is_wrong(tmp_path: Path, data: dict[str, Any], says: str) -> None:
    (tmp_path / "setup.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=says):
        Setup.read(tmp_path / "setup.json")


def test_setup_verifies_the_agents_with_the_metrics_ca_beside_the_clouds(tmp_path: Path) -> None:
    data = {"server_url": "https://198.19.0.1:8787", "ca_file": str(tmp_path / "ca.pem"),
            "prometheus_url": "http://127.0.0.1:9090",
            "alertmanager_url": "http://127.0.0.1:9093"}  # fmt: skip
    assert Setup.from_json(tmp_path, data).scrape.metrics_ca_file is None  # none made
    (tmp_path / "metrics-ca.pem").write_text("")
    assert Setup.from_json(tmp_path, data).scrape.metrics_ca_file == str(
        tmp_path / "metrics-ca.pem"
    )
