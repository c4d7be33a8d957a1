"""Evacuation of a dead lab host (issue 11 item 4) and recovery from its disk (item 5):
the instance comes back on the other host with its IP, MAC and hostname, answering
pings; what it had written is then recovered byte for byte from the dead host, whose
agent is back but whose dockerd is gone for good."""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.lab import lab as labs
from dockyard.lab.procs import run, wait_for
from dockyard.network.plumbing import host_ifname
from tests.lab.conftest import LabRun, running_lab
from tests.lab.test_lab import docker_on

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_hosts() -> Iterator[LabRun]:
    # down 15 s after the last heartbeat (agents beat every 10 s), not the default 30
    with running_lab("--hosts", "2", "--host-down-after", "15") as lab:
        yield lab


def _die(lab: LabRun, host: str, container: str) -> None:
    """The host dies: its agent and dockerd stop, its instance with them."""
    state = labs.Lab.load(lab.state)
    state.host(host).stop_agent()
    assert docker_on(lab, host, "stop", "-t", "1", container).returncode == 0
    state.host(host).stop_dockerd()
    state.save()

    def down() -> bool:
        return bool(lab.cli_json("host", "show", host)["state"] == "down")

    wait_for(down, 90, f"{host} to be seen down")


def _ping(lab: LabRun, ip: str) -> bool:
    ns = lab.record()["probe_ns"]
    cmd = ("nsenter", f"--net=/run/netns/{ns}", "ping", "-c", "2", "-W", "1", ip)
    return run(*cmd, check=False).returncode == 0


def test_a_dead_hosts_instance_is_rebuilt_elsewhere_and_its_data_recovered(
    two_hosts: LabRun,
) -> None:
    lab = two_hosts
    lab.cli("volume", "create", "keep", "--size", "64MB")
    before = lab.cli_json(
        "server", "create", "pet", "--image", "demo", "--flavor", "small", "--network", "lab",
        "--volume", "keep:/data", "--wait",
    )  # fmt: skip
    src = before["host"]
    dst = next(h for h in ("lab1", "lab2") if h != src)
    box = f"dy-{before['id']}"
    write = (
        "mkdir -p /root/work && dd if=/dev/urandom of=/root/work/secret.bin bs=1024 count=500 "
        "2>/dev/null && dd if=/dev/urandom of=/data/vol.bin bs=1024 count=200 2>/dev/null && "
        "sync && sha256sum /root/work/secret.bin /data/vol.bin"
    )
    out = docker_on(lab, src, "exec", box, "sh", "-c", write).stdout
    sums = {Path(p).name: d for d, p in (line.split() for line in out.splitlines())}
    assert len(sums) == 2, out

    refused = lab.cli("host", "evacuate", src, check=False)
    assert refused.returncode == 1 and "is up" in refused.stderr
    _die(lab, src, box)
    started = time.monotonic()
    done = lab.cli_json("host", "evacuate", src, "--wait")
    print(f"evacuate --wait: {time.monotonic() - started:.1f} s to ACTIVE on {dst}")
    assert done["unplaced"] == [], done
    [ev] = done["evacuations"]
    assert (ev["target"], ev["status"], ev["source_state"]) == (dst, "finished", "kept")
    assert "lost unless recovered" in ev["note"]

    after = lab.cli_json("server", "show", "pet")
    same = ("id", "ip", "mac", "hostname")
    assert {k: after[k] for k in same} == {k: before[k] for k in same}
    assert (after["host"], after["status"]) == (dst, "ACTIVE")
    wait_for(lambda: _ping(lab, after["ip"]), 30, f"pet to answer on {after['ip']}")
    gone = docker_on(lab, dst, "exec", box, "ls", "/root/work/secret.bin")
    assert gone.returncode != 0  # rebuilt from its image: that write is on the dead host

    state = labs.Lab.load(lab.state)
    state.host(src).start_agent()  # the agent returns; its dockerd does not
    state.save()
    with tempfile.TemporaryDirectory(prefix="dy-recovered-") as got:
        for path in ("/root/work/secret.bin", "/data/vol.bin"):
            started = time.monotonic()
            lab.cli("server", "recover", "pet", "--host", src, "--path", path, "--to", got)
            print(f"recover {path}: {time.monotonic() - started:.1f} s")
            data = (Path(got) / Path(path).name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == sums[Path(path).name], path


def _running(lab: LabRun, host: str, container: str) -> bool:
    out = docker_on(lab, host, "inspect", "-f", "{{.State.Running}}", container)
    return out.returncode == 0 and out.stdout.strip() == "true"


def test_a_dead_host_that_returns_whole_is_fenced_and_lets_go_when_released(
    two_hosts: LabRun,
) -> None:
    """Fencing (item 4): the evacuated host comes back with its dockerd and agent; its
    agent stops and unplugs what now lives elsewhere, keeps it, never starts it, and
    reports it; the IP answers from the new host only; release removes the old copy."""
    lab = two_hosts
    state = labs.Lab.load(lab.state)
    for h in state.hosts:  # the previous test may have left a host without its dockerd
        h.start_dockerd()
        h.start_agent()
    state.save()
    wait_for(lambda: state.hosts_up() == {"lab1", "lab2"}, 60, "both hosts up")
    lab.cli("host", "disable", "lab2", "--reason", "test: place on lab1")
    try:
        inst = lab.cli_json(
            "server", "create", "fenced", "--image", "demo", "--flavor", "small",
            "--network", "lab", "--wait",
        )  # fmt: skip
    finally:
        lab.cli("host", "enable", "lab2")
    box = f"dy-{inst['id']}"
    assert inst["host"] == "lab1"
    _die(lab, "lab1", box)
    [ev] = lab.cli_json("host", "evacuate", "lab1", "--wait")["evacuations"]
    assert ev["status"] == "finished" and ev["target"] == "lab2", ev

    state = labs.Lab.load(lab.state)
    state.host("lab1").start_dockerd()  # the host returns whole
    state.host("lab1").start_agent()
    state.save()

    def fenced() -> bool:
        rows = lab.cli_json("host", "evacuations", "lab1")
        return any(r["id"] == ev["id"] and r["fenced"] for r in rows)

    wait_for(fenced, 90, "lab1's agent to report the instance fenced")
    assert docker_on(lab, "lab1", "inspect", box).returncode == 0  # kept for recovery
    assert not _running(lab, "lab1", box)
    host_if = host_ifname(inst["id"])
    links = run("ip", "-n", state.host("lab1").netns, "-o", "link", "show", check=False).stdout
    assert host_if not in links  # unplugged
    assert _running(lab, "lab2", box) and _ping(lab, inst["ip"])
    time.sleep(12)  # more than one agent pass: it stays stopped
    assert not _running(lab, "lab1", box)

    lab.cli("host", "release", ev["id"])
    wait_for(lambda: docker_on(lab, "lab1", "inspect", box).returncode != 0, 60, "lab1 to let go")
    assert _running(lab, "lab2", box)
