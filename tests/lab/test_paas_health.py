"""Health checks on a lab host, whose agent lives in a network namespace of its own:
the agent's http probe reaches the instance (it connects from the instance's own
namespace, compute/probes.py), and the server shows the result."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dockyard.lab.procs import wait_for
from tests.lab.conftest import LabRun, running_lab

RC_LOCAL = """#!/bin/sh
mkdir -p /www && echo "$APP_MODE" > /www/index.html
httpd -p 8080 -h /www
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[LabRun]:
    with running_lab("--hosts", "1") as run:
        yield run


def _api(lab: LabRun, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(
        method, f"{lab.env['DOCKYARD_URL']}/v1{path}", timeout=30,
        headers={"authorization": f"Bearer {lab.env['DOCKYARD_TOKEN']}"},
        verify=ssl.create_default_context(cafile=str(lab.state / "tls" / "ca.pem")), **kw,
    )  # fmt: skip
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


def test_an_http_check_goes_healthy_on_a_lab_host(lab: LabRun) -> None:
    body = {
        "name": "checked", "image": "demo", "flavor": "small", "network": "lab",
        "env": {"APP_MODE": "lab"},
        "files": [{"path": "/etc/rc.local", "content": RC_LOCAL, "mode": 0o755}],
        "health_check": {"kind": "http", "port": 8080, "path": "/index.html", "interval_s": 0.5},
    }  # fmt: skip
    iid = _api(lab, "POST", "/instances", json=body)["id"]

    def health() -> str | None:
        shown = _api(lab, "GET", f"/instances/{iid}")
        return (shown.get("health") or {}).get("status")

    wait_for(lambda: health() == "healthy", 120, "the instance to be healthy")
    lab.cli("server", "delete", "checked", "--wait")
