"""Monitoring a lab of 2 joined hosts (2 AZs): each agent got its /metrics certificate
from the server at start (from the metrics CA, for its registered address), and a real
Prometheus on the rendered configuration (one http_sd endpoint) scrapes both agents
over HTTPS and the server, all up."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dockyard import pki
from dockyard.lab import lab as labs
from dockyard.lab.procs import wait_for
from dockyard.monitor import config, rules, yamltext
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
    # the agents' certificates come from the metrics CA, for their registered address
    metrics_ca = lab.ca.parent / "metrics-ca.pem"
    for t in agents:
        host, port = t["targets"][0].rsplit(":", 1)
        pem = ssl.get_server_certificate((host, int(port))).encode()
        assert pki.issued_by(pem, metrics_ca.read_bytes()), t
        assert not pki.issued_by(pem, lab.ca.read_bytes()), t  # clients' CA: not fooled
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    (tmp_path / "rules.yml").write_text(yamltext.dump(rules.render()))
    # what `dockyard monitoring config --prometheus` gives (server verified with the
    # cloud's CA, the agents with the metrics CA), scraping every second
    scrape = config.Scrape(server_url=lab.url, token_file=str(token_file),
                           rules_file=str(tmp_path / "rules.yml"), alertmanager="127.0.0.1:9",
                           ca_file=str(lab.ca), metrics_ca_file=str(metrics_ca),
                           interval="1s")  # fmt: skip
    with prometheus(yamltext.dump(config.prometheus(scrape)), tmp_path / "prometheus") as url:

        def health() -> dict[str, str] | None:
            try:
                r = httpx.get(f"{url}/api/v1/targets", timeout=5)
                active = r.json()["data"]["activeTargets"]
            except (httpx.HTTPError, ValueError):
                return None
            got = {t["labels"].get("host", "server"): t["health"] for t in active}
            return got if got == {"lab1": "up", "lab2": "up", "server": "up"} else None

        print(f"\nPrometheus targets: {wait_for(health, 90, 'all three targets up', 1)}")
