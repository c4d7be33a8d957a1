"""`dockyard lab up --monitoring`: Prometheus and Alertmanager beside the lab's server,
Prometheus pointed at its discovery endpoint over TLS, both stopped by `lab down`."""

from __future__ import annotations

import shutil

import httpx
import pytest

from dockyard.lab.procs import wait_for
from tests.lab.conftest import running_lab

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("prometheus-alertmanager") is None,
    reason="needs prometheus and prometheus-alertmanager (scripts/packages.sh)",
)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/healthy", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_lab_monitoring_starts_and_lab_down_stops_it() -> None:
    with running_lab("--hosts", "1", "--no-demo", "--monitoring") as run:
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (run.state / "monitoring.env").read_text().splitlines()
        )
        prom, am = env["PROMETHEUS_URL"], env["ALERTMANAGER_URL"]
        assert _answers(prom) and _answers(am)
        rules = httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
        assert {"dockyard-hosts", "dockyard-instances", "dockyard-drift"} <= {
            g["name"] for g in rules
        }
        found = wait_for(
            lambda: httpx.get(f"{prom}/api/v1/alertmanagers").json()["data"][
                "activeAlertmanagers"
            ],
            30,
            "Prometheus to find the Alertmanager",
        )
        assert found[0]["url"] == f"{am}/api/v2/alerts"
        config = httpx.get(f"{prom}/api/v1/status/config").json()["data"]["yaml"]
        record = run.record()
        assert f"{record['url']}/v1/monitoring/targets" in config
        assert str(run.state / "tls" / "ca.pem") in config
        # the agents' job verifies them with the metrics CA, and reaches lab1's over HTTPS
        assert str(run.state / "tls" / "metrics-ca.pem") in config

        def agent_up() -> list[dict] | None:
            active = httpx.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
            up = [t for t in active if t["labels"].get("job") == "dockyard-agent"
                  and t["health"] == "up"]  # fmt: skip
            return up or None

        up = wait_for(agent_up, 60, "Prometheus to scrape lab1's agent", 1)
        assert up[0]["labels"]["host"] == "lab1" and up[0]["scrapeUrl"].startswith("https://")
        pids = record["monitoring"]["pids"]
        assert set(pids) == {"prometheus", "alertmanager"}
        run.lab("down")
        assert not _answers(prom) and not _answers(am)
        assert not (run.state / "monitoring.env").exists()
        assert (run.state / "monitoring" / "prometheus.log").exists()  # logs are kept
