"""dockyard-agent refuses, before any side effect, an uplink that carries this host's
address (enslaving eth0 would cut the host off) and a zone that contradicts the one its
join token gave it. Run as the real command, without root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.network.plumbing import uplink_problem


def _agent(state: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockyard.compute.cli", "--state-dir", str(state), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _addressed_nic() -> tuple[str, str] | None:
    """A link beyond loopback with an IPv4 address, and that address."""
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True)
    for link in json.loads(out.stdout or "[]"):
        for a in link.get("addr_info", []):
            if link["ifname"] != "lo" and a.get("local"):
                return link["ifname"], a["local"]
    return None


def test_an_uplink_with_the_hosts_address_is_refused_naming_it(tmp_path: Path) -> None:
    found = _addressed_nic()
    if found is None:
        pytest.skip("no NIC with an IPv4 address here")
    nic, address = found
    token = tmp_path / "token"
    token.write_text("dy_x\n")
    r = _agent(tmp_path / "state", "--token-file", str(token), "--server",
               "http://127.0.0.1:9", "--uplink", nic)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert f"--uplink {nic}" in r.stderr and address in r.stderr and "cut the host off" in r.stderr


def test_a_network_uplink_with_an_address_is_refused_too() -> None:
    said = uplink_problem("lo")  # what `network create --uplink` would enslave
    assert said is not None and "127.0.0.1/8" in said
    assert uplink_problem("no-such-link0") is None  # the caller says it does not exist


def _joined(state: Path, zone: str) -> None:
    """The files an earlier join left (compute/join.py)."""
    state.mkdir()
    (state / "enrolment.json").write_text(
        json.dumps({"server": "https://127.0.0.1:9", "host": "h1", "availability_zone": zone})
    )
    (state / "agent.token").write_text("dy_x\n")
    (state / "ca.pem").write_text("not used before the refusal\n")


def test_a_zone_flag_that_contradicts_the_join_tokens_zone_is_refused(tmp_path: Path) -> None:
    _joined(tmp_path / "state", "az1")
    r = _agent(tmp_path / "state", "--availability-zone", "az2")
    assert r.returncode == 2, r.stderr
    assert "--availability-zone az2" in r.stderr and "joined zone 'az1'" in r.stderr
    assert "dockyard host add h1 --az az2" in r.stderr
