"""Upgrades the instances do not notice (issue 10 item 7), on a lab host: its agent
restarts, its dockerd restarts with live-restore (what the lab, set-up and join
start) and without it. A probe on the datacenter switch pings every 100 ms."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard.lab import lab as labs
from dockyard.lab.outage import pinged_during
from dockyard.lab.procs import wait_for
from tests.lab.conftest import LabRun, running_lab

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def one_host() -> Iterator[LabRun]:
    with running_lab("--hosts", "1") as run:
        yield run


@pytest.fixture(scope="module")
def instance(one_host: LabRun) -> dict[str, Any]:
    return dict(
        one_host.cli_json(
            "server",
            "create",
            "pet",
            "--image",
            "demo",
            "--flavor",
            "small",
            "--network",
            "lab",
            "--wait",
        )  # fmt: skip
    )


def answers(run: LabRun, ip: str) -> bool:
    ns = run.record()["probe_ns"]
    cmd = ["nsenter", f"--net=/run/netns/{ns}", "ping", "-c", "1", "-W", "1", ip]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def settled(run: LabRun, inst: dict[str, Any]) -> bool:
    now = run.cli_json("server", "show", inst["id"])
    return bool(
        now["status"] == "ACTIVE"
        and now["power_state"] == "running"
        and not now["task_state"]
        and answers(run, inst["ip"])
    )


def started_at(run: LabRun, inst: dict[str, Any]) -> str:
    host = labs.Lab.load(run.state).host("lab1")
    return str(host.docker("GET", f"/containers/dy-{inst['id']}/json").json()["State"]["StartedAt"])


def restart_dockerd(state: Path, live_restore: bool) -> None:
    lab = labs.Lab.load(state)
    host = lab.host("lab1")
    host.extra["live_restore"] = live_restore
    host.stop_dockerd()
    host.start_dockerd()
    lab.save()


def test_an_agent_restart_loses_no_packet(one_host: LabRun, instance: dict[str, Any]) -> None:
    ns = one_host.record()["probe_ns"]
    before = started_at(one_host, instance)
    out = pinged_during(
        ns, instance["ip"], lambda: (one_host.lab("host", "stop", "lab1"),
                                     one_host.lab("host", "start", "lab1")), after=2
    )  # fmt: skip
    assert out.sent > 20 and out.lost == 0, out
    assert started_at(one_host, instance) == before  # the same container, never restarted
    wait_for(lambda: settled(one_host, instance), 30, "the instance to be ACTIVE and answer")


def test_a_dockerd_restart_with_live_restore_loses_no_packet_and_the_agent_still_manages(
    one_host: LabRun, instance: dict[str, Any]
) -> None:
    ns = one_host.record()["probe_ns"]
    before = started_at(one_host, instance)
    out = pinged_during(ns, instance["ip"], lambda: restart_dockerd(one_host.state, True), after=2)
    assert out.sent > 20 and out.lost == 0, out
    assert started_at(one_host, instance) == before
    # the agent (which kept running) still drives the re-adopted container
    one_host.cli("server", "stop", "pet", "--wait")
    assert not answers(one_host, instance["ip"])
    one_host.cli("server", "start", "pet", "--wait")
    wait_for(lambda: settled(one_host, instance), 30, "the instance to be ACTIVE and answer")


def test_without_live_restore_the_agent_brings_the_instance_back_by_itself(
    one_host: LabRun, instance: dict[str, Any]
) -> None:
    """dockerd's default stops its containers with it; the agent notices the restarted
    dockerd (its event stream reconnects) and starts and re-plumbs the instance."""
    before = started_at(one_host, instance)
    try:
        restart_dockerd(one_host.state, False)
        wait_for(lambda: settled(one_host, instance), 30, "the instance to come back")
        assert started_at(one_host, instance) != before  # it really was stopped and started
    finally:
        restart_dockerd(one_host.state, True)
