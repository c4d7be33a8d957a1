"""`dockyard up --monitoring`: Prometheus and Alertmanager start beside the cloud with
Dockyard's rules loaded and the Alertmanager reachable from Prometheus; Ctrl-C stops them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.lab.procs import LabError
from tests.integration.cluster import free_ports, wait_for
from tests.integration.test_up import Up, dockerd  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("prometheus-alertmanager") is None,
        reason="needs prometheus and prometheus-alertmanager (scripts/packages.sh)",
    ),
]


def _env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


def _get(url: str) -> Any:
    r = httpx.get(url, timeout=5)
    r.raise_for_status()
    return r.json()["data"] if r.headers["content-type"].startswith("application/json") else r


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/healthy", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


JOBS = {"dockyard-agent", "dockyard-server"}


def test_up_monitoring_runs_prometheus_with_the_rules_and_the_alertmanager(
    dockerd, tmp_path: Path  # noqa: F811
) -> None:
    tuning = tmp_path / "tuning.json"
    tuning.write_text(json.dumps({"interval": "1s", "rules": {"*": {"for": "5s"}}}))
    base = free_ports(2)
    ports = f"{base},{base + 1}"
    up = Up(dockerd.root / "state", dockerd.url, "127.0.0.1", "--no-demo", "--monitoring",
            "--monitoring-ports", ports, "--alert-tuning", str(tuning))  # fmt: skip
    try:
        up.start()
    except AssertionError as exc:
        logs = {p.name: p.read_text()[-2000:] for p in up.state.glob("**/*.log")}
        raise AssertionError(f"{exc}; logs: {logs}") from exc
    try:
        env = _env(up.state / "monitoring.env")
        prom, am = env["PROMETHEUS_URL"], env["ALERTMANAGER_URL"]
        assert prom.endswith(ports.split(",")[0]) and am.endswith(ports.split(",")[1])
        assert _answers(prom) and _answers(am)
        groups = {g["name"]: g for g in _get(f"{prom}/api/v1/rules")["groups"]}
        assert {"dockyard-hosts", "dockyard-instances", "dockyard-drift"} <= set(groups)
        hosts = {r["name"]: r for r in groups["dockyard-hosts"]["rules"]}
        assert hosts["DockyardHostDown"]["duration"] == 5  # the tuning's for: 5s
        assert groups["dockyard-hosts"]["interval"] == 1

        def alertmanagers() -> list[str]:
            data = _get(f"{prom}/api/v1/alertmanagers")
            return [a["url"] for a in data["activeAlertmanagers"]]

        found = wait_for(alertmanagers, 30, "Prometheus to find the Alertmanager")
        assert found == [f"{am}/api/v2/alerts"]
        status = httpx.get(f"{am}/api/v2/status", timeout=5).json()
        assert "DockyardHostDown" in status["config"]["original"]  # the inhibition rule
        sd = _get(f"{prom}/api/v1/status/config")["yaml"]
        assert f"{up.address}:{up.port}/v1/monitoring/targets" in sd

        seen: list[Any] = []

        def every_target_up() -> dict[str, str] | None:
            active = _get(f"{prom}/api/v1/targets")["activeTargets"]
            seen[:] = [(t["labels"], t["health"], t["lastError"]) for t in active]
            health = {t["labels"]["job"]: t["health"] for t in active}
            return health if set(health) == JOBS and set(health.values()) == {"up"} else None

        # the scrape credential is the monitoring token the server wrote for Prometheus
        try:
            wait_for(every_target_up, 60, "Prometheus to scrape the agent and the server")
        except LabError as exc:
            raise AssertionError(f"{exc}: {seen}") from exc
        token = (up.state / "monitoring" / "scrape.token").read_text()
        assert token == (up.state / "monitoring.token").read_text()
    finally:
        assert up.stop() == 0
    assert not _answers(prom) and not _answers(am)  # stopped with `dockyard up`
