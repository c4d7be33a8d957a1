"""The agent's /metrics and the server's service discovery, scraped by a real Prometheus.

The one-host cloud's agent serves /metrics over HTTPS with a certificate from a CA
made here; Prometheus (Debian's, started here on a free port with its data in a temp
dir, stopped by PID) finds both targets through one http_sd_configs entry.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dockyard import pki
from tests.integration.cluster import wait_for
from tests.prometheus import prometheus

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def tls(cluster, tmp_path_factory):
    """A CA and a certificate for 127.0.0.1, and the agent restarted to serve with it."""
    d = tmp_path_factory.mktemp("metrics-tls")
    ca, _ = pki.ensure_ca(d)
    cert = pki.ensure_server_cert(d, ["127.0.0.1", "localhost"], stem="metrics")
    cluster.kill_agent(signal.SIGTERM)
    cluster.start_agent(
        args=("--metrics-cert", str(cert.cert), "--metrics-key", str(cert.key)),
        DOCKYARD_METRICS_SECONDS="1",  # sample every second here (5 s by default)
    )
    return ca


def _trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _token(cluster) -> str:
    return (cluster.root / "server" / "monitoring.token").read_text().strip()


def _agent_target(cluster):
    sd = cluster.api("GET", "/monitoring/targets")
    return next((t for t in sd if t["labels"]["job"] == "dockyard-agent"), None)


def _scrape(cluster, ca: Path, series: str = "dockyard_agent_info") -> str:
    target = wait_for(
        lambda: (t := _agent_target(cluster)) and t["labels"]["__scheme__"] == "https" and t,
        30,
        "the agent's https target in the service discovery",
    )
    url = f"https://{target['targets'][0]}{target['labels']['__metrics_path__']}"
    headers = {"Authorization": f"Bearer {_token(cluster)}"}

    def scraped() -> str | None:
        try:
            r = httpx.get(url, headers=headers, verify=_trust(ca), timeout=10)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 and series in r.text else None

    return wait_for(scraped, 30, "a scrape with the instance's series", interval=0.5)


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, _key(sample.labels)): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def test_agent_metrics_need_the_token_and_pass_promtool(cluster, tls):
    s = cluster.create("metered")
    running = (
        'dockyard_instance_running{az="nova",host="itest",'
        f'instance_id="{s["id"]}",name="metered",project="admin"}} 1.0'
    )
    body = _scrape(cluster, tls, running)  # within a sample of the container's start
    target = _agent_target(cluster)
    assert target["labels"]["host"] == "itest" and target["labels"]["az"] == "nova"
    url = f"https://{target['targets'][0]}/metrics"
    assert httpx.get(url, verify=_trust(tls), timeout=10).status_code == 401
    bad = {"Authorization": "Bearer dy_not-the-token"}
    assert httpx.get(url, headers=bad, verify=_trust(tls), timeout=10).status_code == 401

    ours = {"instance_id": s["id"], "name": "metered", "project": "admin"}
    here = {"host": "itest", "az": "nova"}
    got = _samples(body)
    assert got[("dockyard_instance_running", _key({**ours, **here}))] == 1
    assert got[("dockyard_instance_cpu_seconds_total", _key({**ours, **here, "mode": "user"}))] >= 0
    assert got[("dockyard_instance_memory_usage_bytes", _key({**ours, **here}))] > 0
    assert got[("dockyard_instance_pids_limit", _key({**ours, **here}))] == 256
    assert got[("dockyard_instance_pids", _key({**ours, **here}))] >= 1
    assert ("dockyard_instance_network_receive_bytes_total", _key({**ours, **here})) in got
    assert got[("dockyard_host_pid_max", _key(here))] > 0
    assert got[("dockyard_dockerd_up", _key(here))] == 1
    for cls in ("oom_kill", "hung_task", "io_error", "segfault", "soft_lockup"):
        assert ("dockyard_host_kernel_events_total", _key({**here, "class": cls})) in got
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True
    )
    print(f"\n{len(body.splitlines())} lines scraped; promtool: {lint.stdout}{lint.stderr}")
    assert lint.returncode == 0, lint.stdout + lint.stderr


def _process(cluster, ca: Path, instance_id: str, name: str) -> dict[str, float]:
    got = _samples(_scrape(cluster, ca))
    return {
        n: v
        for (n, labels), v in got.items()
        if n.startswith("dockyard_instance_process_")
        and ("instance_id", instance_id) in labels
        and ("process", name) in labels
    }


def test_a_killed_key_process_shows_down_then_restarted(cluster, tls, machine_image):
    """supervisord's XML-RPC socket, reached through the container's root: the image's
    program "web" is up, and after a kill supervisord's restart is counted."""
    if cluster.api("GET", "/flavors/m256", check=False).get("status") == 404:
        cluster.cli("flavor", "create", "m256", "--vcpus", "1", "--memory", "256")
    s = cluster.create("keyed", "--timeout", "180", flavor="m256", image=machine_image)
    up = "dockyard_instance_process_up"
    restarts = "dockyard_instance_process_restarts_total"
    first = wait_for(
        lambda: (p := _process(cluster, tls, s["id"], "web")).get(up) == 1 and p,
        60,
        "web up in supervisord",
        interval=0.5,
    )
    assert first[restarts] == 0
    sshd = _process(cluster, tls, s["id"], "sshd")
    assert sshd[up] == 1
    # inflict the failure from outside, as a crash would: the agent only reads
    cluster.container(s["id"]).exec_run(["pkill", "-f", "http.server"])
    again = wait_for(
        lambda: (p := _process(cluster, tls, s["id"], "web")).get(restarts, 0) >= 1 and p,
        30,
        "the restart of web counted",
        interval=0.5,
    )
    print(f"\nweb after a kill: {again}")
    cluster.cli("server", "delete", "keyed", "--wait")


def test_prometheus_finds_and_scrapes_every_target_through_http_sd(cluster, tls, tmp_path):
    _scrape(cluster, tls)
    token_file = tmp_path / "token"
    token_file.write_text(_token(cluster) + "\n")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "dockyard",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "tls_config": {"ca_file": str(tls)},
                "http_sd_configs": [
                    {
                        "url": f"{cluster.url}/v1/monitoring/targets",
                        "refresh_interval": "1s",
                        "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                    }
                ],
            }
        ],
    }
    with prometheus(json.dumps(config), tmp_path / "prometheus") as url:  # JSON is YAML

        def all_up():
            try:
                r = httpx.get(f"{url}/api/v1/targets", timeout=5)
                active = r.json()["data"]["activeTargets"]
            except (httpx.HTTPError, ValueError):
                return None  # not listening, or not ready yet
            jobs = {t["labels"]["job"]: t["health"] for t in active}
            return jobs if jobs == {"dockyard-agent": "up", "dockyard-server": "up"} else None

        def last_seen():
            try:
                r = httpx.get(f"{url}/api/v1/targets", timeout=5)
                return json.dumps(r.json()["data"]["activeTargets"], indent=1)[:3000]
            except (httpx.HTTPError, ValueError) as exc:
                return str(exc)

        try:
            jobs = wait_for(all_up, 60, "both targets up in Prometheus", interval=1)
        except Exception:
            print(last_seen())
            raise
        print(f"\nPrometheus targets: {jobs}")
        r = httpx.get(
            f"{url}/api/v1/query",
            params={"query": 'dockyard_host_up{host="itest"}'},
            timeout=5,
        )
        result = r.json()["data"]["result"]
        assert result and result[0]["value"][1] == "1"
