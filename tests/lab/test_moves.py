"""Cold migration between two lab hosts in one zone (issue 11 item 2), end to end.

    migrate web --host lab2: same id (container dy-<id>), IP, MAC and hostname after;
        a file written in its root fs is there; lab1 holds no container of it
    snapshot a running instance, create another from it: the file is in the copy
    migrate with lab2's agent stopped: rolled back (the deadline, DOCKYARD_MIGRATION_TIMEOUT
        here 30 s): running on lab1 again with its file; once lab2's agent is back,
        nothing of it is left there
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.lab import lab as labs
from dockyard.lab.procs import wait_for
from tests.lab.conftest import LabRun, running_lab
from tests.lab.sniff import heard_from
from tests.lab.test_lab import docker_on, probe_ping

pytestmark = [pytest.mark.root, pytest.mark.slow]
TIMEOUT = "30"  # per phase; a loaded CI machine pushes slowly


@pytest.fixture(scope="module")
def one_zone() -> Iterator[LabRun]:
    os.environ["DOCKYARD_MIGRATION_TIMEOUT"] = TIMEOUT  # the lab's server inherits it
    try:
        with running_lab("--hosts", "2") as run:
            yield run
    finally:
        os.environ.pop("DOCKYARD_MIGRATION_TIMEOUT", None)


def _create(lab: LabRun, name: str, *extra: str) -> Any:
    inst = lab.cli_json(
        "server", "create", name, "--image", "demo", "--flavor", "small", "--network", "lab",
        "--wait", *extra,
    )  # fmt: skip
    if inst["host"] != "lab1":  # start every test from lab1
        lab.cli("server", "migrate", name, "--host", "lab1", "--wait")
        inst = lab.cli_json("server", "show", name)
    return inst


def _exec(lab: LabRun, host: str, inst: Any, script: str) -> str:
    out = docker_on(lab, host, "exec", f"dy-{inst['id']}", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _containers(lab: LabRun, host: str) -> list[str]:
    out = docker_on(lab, host, "ps", "-a", "--format", "{{.Names}}").stdout
    return out.split()


def _port(lab: LabRun, host: str) -> str:
    """The switch port (root end of the uplink veth) of a lab host."""
    return str(next(h for h in lab.record()["hosts"] if h["name"] == host)["uplink_if"])


def test_a_running_instance_moves_with_its_identity_root_fs_and_volume(
    one_zone: LabRun,
) -> None:
    """...and its IP never speaks from both hosts: every frame from it passes lab1's
    switch port before the first one passes lab2's, while a probe pings it every 100 ms."""
    lab = one_zone
    lab.cli("volume", "create", "movevol", "--size", "64MB")
    inst = _create(lab, "mover", "--volume", "movevol:/data")
    _exec(lab, "lab1", inst, "echo kept-across-hosts > /root/note")
    data_sum = _exec(lab, "lab1", inst, "dd if=/dev/urandom of=/data/v.bin bs=1024 count=1024 "
                     "2>/dev/null && sync && sha256sum /data/v.bin").split()[0]  # fmt: skip
    ping = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{lab.record()['probe_ns']}", "ping", "-n", "-i", "0.1",
         inst["ip"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with heard_from(inst["ip"], [_port(lab, "lab1"), _port(lab, "lab2")]) as heard:
            time.sleep(1)
            out = lab.cli("server", "migrate", "mover", "--host", "lab2", "--wait", "-f", "json")
            wait_for(lambda: probe_ping(lab, inst["ip"]), 30, "mover to answer on lab2")
            time.sleep(1)
    finally:
        ping.terminate()
        ping.wait()
    on1, on2 = heard[_port(lab, "lab1")], heard[_port(lab, "lab2")]
    assert on1 and on2, heard
    assert max(on1) < min(on2), f"{len([t for t in on1 if t >= min(on2)])} frames overlap"
    mig = json.loads(out.stdout)
    assert mig["status"] == "finished" and mig["downtime_s"] is not None, mig
    # the root fs went as one layer of the upper dir on its image, beside the volume
    assert "commit" not in mig["seconds"] and {"push", "volumes"} <= set(mig["seconds"]), mig
    after = lab.cli_json("server", "show", "mover")
    same = ("id", "ip", "mac", "hostname", "name")
    assert after["host"] == "lab2" and after["status"] == "ACTIVE"
    assert {k: after[k] for k in same} == {k: inst[k] for k in same}
    assert _exec(lab, "lab2", after, "cat /root/note").strip() == "kept-across-hosts"
    assert _exec(lab, "lab2", after, "hostname").strip() == inst["hostname"]
    assert _exec(lab, "lab2", after, "cat /sys/class/net/eth0/address").strip() == inst["mac"]
    assert _exec(lab, "lab2", after, "sha256sum /data/v.bin").split()[0] == data_sum
    assert probe_ping(lab, inst["ip"])
    wait_for(lambda: f"dy-{inst['id']}" not in _containers(lab, "lab1"), 60, "lab1 to let go")
    listed = lab.cli_json("migration", "list", "--server", "mover")
    assert [m["status"] for m in listed][-1] == "finished"


def test_a_snapshot_is_an_image_new_instances_start_from(one_zone: LabRun) -> None:
    lab = one_zone
    inst = _create(lab, "origin")
    _exec(lab, "lab1", inst, "echo in-the-snapshot > /root/note")
    image = lab.cli_json("server", "snapshot", "origin", "--image", "origin-snap", "--wait")
    assert image["status"] == "active" and image["digest"].startswith("sha256:")
    assert lab.cli_json("server", "show", "origin")["status"] == "ACTIVE"  # not stopped
    copy = lab.cli_json(
        "server", "create", "copy", "--image", "origin-snap", "--flavor", "small",
        "--network", "lab", "--wait",
    )  # fmt: skip
    assert copy["status"] == "ACTIVE" and copy["ip"] != inst["ip"]
    assert _exec(lab, copy["host"], copy, "cat /root/note").strip() == "in-the-snapshot"


def test_a_target_whose_agent_is_stopped_gets_nothing_and_the_source_runs_it(
    one_zone: LabRun,
) -> None:
    lab = one_zone
    inst = _create(lab, "stayer")
    _exec(lab, "lab1", inst, "echo still-here > /root/note")
    # still "up" for --host-down-after: the claim goes through. host_stop/start record
    # the agent's PID in lab.json, so `lab down` stops the agent started here too
    labs.host_stop(lab.state, "lab2", dockerd=False)
    try:
        failed = lab.cli("server", "migrate", "stayer", "--host", "lab2", "--wait", check=False)
        assert failed.returncode == 1, failed
        assert "migration of stayer failed" in failed.stderr
    finally:
        labs.host_start(lab.state, "lab2")
    back = lab.cli_json("server", "show", "stayer")
    assert back["host"] == "lab1" and back["ip"] == inst["ip"]
    wait_for(
        lambda: lab.cli_json("server", "show", "stayer")["power_state"] == "running",
        60,
        "stayer to run on lab1 again",
    )
    assert _exec(lab, "lab1", inst, "cat /root/note").strip() == "still-here"
    assert probe_ping(lab, inst["ip"])
    actions = lab.cli_json("server", "actions", "stayer")
    migrate = [a for a in actions if a["action"] == "migrate"][-1]  # a cleanup may follow
    assert migrate["result"] == "error"
    wait_for(lambda: f"dy-{inst['id']}" not in _containers(lab, "lab2"), 60, "lab2 to clean up")


def test_a_drained_host_gives_every_instance_to_the_other(one_zone: LabRun) -> None:
    lab = one_zone
    made = [_create(lab, f"drained{i}") for i in range(2)]
    try:
        lab.cli("host", "drain", "lab1", "--wait")
        shown = lab.cli_json("host", "show", "lab1")
        assert not shown["enabled"] and "drain" in (shown["disabled_reason"] or "")
        for inst in made:
            after = lab.cli_json("server", "show", inst["name"])
            assert (after["host"], after["status"], after["ip"]) == ("lab2", "ACTIVE", inst["ip"])
            assert probe_ping(lab, inst["ip"])
        wait_for(lambda: not [c for c in _containers(lab, "lab1") if c.startswith("dy-")], 60,
                 "lab1 to hold no instance")  # fmt: skip
    finally:
        lab.cli("host", "enable", "lab1")
