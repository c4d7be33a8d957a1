"""network/plumbing.shape's processes, recorded instead of run (no root needed)."""

from __future__ import annotations

import subprocess

import pytest

from dockyard.model import Limits
from dockyard.network import plumbing


@pytest.fixture
def ran(monkeypatch):
    seen: list[list[str]] = []

    def run(cmd, **kw):
        seen.append([*cmd, kw.get("input") or ""])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(plumbing.subprocess, "run", run)
    monkeypatch.setattr(plumbing, "link_exists", lambda _name: False)
    return seen


def test_a_fresh_veth_without_limits_is_shaped_without_a_process(ran):
    """Every start of an instance without network limits ran tc to delete qdiscs that a
    veth made a moment before cannot have."""
    plumbing.shape("i-1", "dyh1", Limits(), fresh=True)
    assert ran == []


def test_a_veth_that_had_limits_loses_them(ran):
    plumbing.shape("i-1", "dyh1", Limits())  # e.g. a resize to a flavor without them
    assert len(ran) == 1 and ran[0][:3] == ["tc", "-force", "-batch"]
    assert "qdisc del dev dyh1 root" in ran[0][-1] and "dev dyh1 ingress" in ran[0][-1]


def test_a_fresh_veth_with_limits_gets_them(ran):
    plumbing.shape("i-1", "dyh1", Limits(net_ingress_kbit=1000, net_egress_kbit=2000), fresh=True)
    tc = [" ".join(c) for c in ran if c[0] == "tc"]
    assert any("dev dyh1 root" in c and "tbf" in c for c in tc), tc
    assert any("mirred" in c for c in tc), tc
