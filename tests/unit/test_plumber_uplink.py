"""The agent's --uplink: every network bridge enslaves it unless the network names its own
(issue 10 item 4: one L2 network across hosts, no tunnels)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.compute.plumber import HostPlumber
from dockyard.model import NetSpec
from dockyard.network import plumbing


def _net(uplink: str | None) -> NetSpec:
    return NetSpec(
        bridge="br-a", uplink=uplink, mtu=1500, ip="198.18.5.10", prefixlen=24,
        gateway=None, mac="02:00:c6:12:05:0a", dns=[],
    )  # fmt: skip


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[NetSpec]:
    calls: list[NetSpec] = []

    def prepare(instance_id: str, net: NetSpec) -> None:
        calls.append(net)

    def plumb(instance_id: str, pid: int, net: NetSpec, **kw: Any) -> str:
        calls.append(net)
        return "dyx"

    monkeypatch.setattr(plumbing, "prepare", prepare)
    monkeypatch.setattr(plumbing, "plumb", plumb)
    return calls


def test_a_network_without_uplink_gets_the_agents(seen: list[NetSpec]) -> None:
    p = HostPlumber(uplink="uplink0")
    p.prepare("i", _net(None))
    p.plumb("i", 1, _net(None))
    assert [n.uplink for n in seen] == ["uplink0", "uplink0"]


def test_a_networks_own_uplink_wins(seen: list[NetSpec]) -> None:
    HostPlumber(uplink="uplink0").prepare("i", _net("eth7"))
    assert seen[0].uplink == "eth7"


def test_no_agent_uplink_changes_nothing(seen: list[NetSpec]) -> None:
    HostPlumber().prepare("i", _net(None))
    assert seen[0].uplink is None
