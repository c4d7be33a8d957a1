"""Monitoring a lab of 2 joined hosts (2 AZs): each agent got its /metrics certificate
from the server at start, and a real Prometheus with one http_sd_configs entry scrapes
both agents over HTTPS and the server, all up."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dockyard.lab import lab as labs
from dockyard.lab.procs import wait_for
from tests.lab.conftest import LabRun, running_lab
from tests.prometheus import prometheus

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_hosts() -> Iterator[LabRun]:
    with running_lab("--hosts", "2", "--azs", "az1,az2") as run:
        yield run


def _targets(lab: labs.Lab, token: str) -> list[dict]:
    r = httpx.get(
        f"{lab.url}/v1/monitoring/targets",
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=str(lab.ca)),
        timeout=10,
    )
    r.raise_for_status()
    return list(r.json())


def test_prometheus_scrapes_two_joined_hosts_over_https(two_hosts: LabRun, tmp_path: Path):
    lab = labs.Lab.load(two_hosts.state)
    token = (two_hosts.state / "server" / "monitoring.token").read_text().strip()
    agents = wait_for(
        lambda: (
            (a := [t for t in _targets(lab, token) if t["labels"]["job"] == "dockyard-agent"])
            and len(a) == 2
            and a
        ),
        60,
        "both agents in the service discovery",
    )
    assert {t["labels"]["__scheme__"] for t in agents} == {"https"}
    assert sorted(t["labels"]["az"] for t in agents) == ["az1", "az2"]
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    auth = {"type": "Bearer", "credentials_file": str(token_file)}
    tls = {"ca_file": str(lab.ca)}
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "dockyard",
                "authorization": auth,
                "tls_config": tls,
                "http_sd_configs": [
                    {
                        "url": f"{lab.url}/v1/monitoring/targets",
                        "refresh_interval": "1s",
                        "authorization": auth,
                        "tls_config": tls,
                    }
                ],
            }
        ],
    }
    with prometheus(json.dumps(config), tmp_path / "prometheus") as url:  # JSON is YAML

        def health() -> dict[str, str] | None:
            try:
                r = httpx.get(f"{url}/api/v1/targets", timeout=5)
                active = r.json()["data"]["activeTargets"]
            except (httpx.HTTPError, ValueError):
                return None
            got = {t["labels"].get("host", "server"): t["health"] for t in active}
            return got if got == {"lab1": "up", "lab2": "up", "server": "up"} else None

        print(f"\nPrometheus targets: {wait_for(health, 90, 'all three targets up', 1)}")
