"""Host lifecycle on real lab hosts (issue 10 items 2 and 6): joins the server refuses
(the real `dockyard-agent --join` against the lab's HTTPS server), a disabled host
that new instances avoid, and a delete asked for while a host's agent is down that the
returning agent carries out. One lab of two hosts in two zones, whose server calls a
host down 12 s after its agent last spoke (agents beat every 10 s)."""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.lab.daemons import joining_agent_cmd
from dockyard.lab.procs import wait_for
from tests.lab.conftest import LabRun, running_lab
from tests.lab.test_lab import create, docker_on, probe_ping, sh

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab() -> Iterator[LabRun]:
    with running_lab("--hosts", "2", "--azs", "az1,az2", "--host-down-after", "12") as run:
        yield run


@pytest.fixture(scope="module")
def short_lived(lab: LabRun) -> dict[str, Any]:
    """A join token made when the module starts, expiring in a minute (the shortest the
    server gives): the test that needs it expired waits out what is left of it."""
    return dict(lab.cli_json("host", "add", "late", "--expires", "1m"))


def agent_join(lab: LabRun, name: str, token: str, ca_hash: str, state: Path) -> Any:
    """`dockyard-agent --join URL --ca-hash H` as `host add` prints it (the token in
    DOCKYARD_JOIN_TOKEN), from this machine to the lab's server."""
    cmd = joining_agent_cmd(lab.env["DOCKYARD_URL"], ca_hash, name, state)
    env = {**os.environ, "DOCKYARD_JOIN_TOKEN": token}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def held(lab: LabRun) -> tuple[list[str], list[Any]]:
    """The hosts and the tokens (users' and agents') the server holds."""
    hosts = sorted(h["name"] for h in lab.cli_json("host", "list"))
    return hosts, sorted(lab.cli_json("token", "list"), key=lambda t: str(t["id"]))


def refused(lab: LabRun, before: tuple[list[str], list[Any]], r: Any, state: Path) -> str:
    """The agent exited with a message and saved nothing; the server made no host row
    and no agent token."""
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert not list(state.glob("*")), list(state.iterdir())
    assert held(lab) == before
    return str(r.stderr)


def test_a_reused_join_token_is_refused(
    lab: LabRun, short_lived: dict[str, Any], tmp_path: Path
) -> None:
    spent = lab.record()["hosts"][0]["extra"]["join"]  # lab1 joined with it
    before = held(lab)
    r = agent_join(lab, "lab1", spent["token"], spent["ca_hash"], tmp_path)
    said = refused(lab, before, r, tmp_path)
    assert "already used" in said and "works once" in said
    assert "`dockyard host add lab1`" in said
    assert lab.cli_json("host", "show", "lab1")["state"] == "up"  # the real lab1 is untouched


def test_a_wrong_join_token_is_refused(lab: LabRun, tmp_path: Path) -> None:
    made, before = lab.cli_json("host", "add", "wrong"), held(lab)
    r = agent_join(lab, "wrong", "dyj_" + "x" * 40, made["ca_hash"], tmp_path)
    said = refused(lab, before, r, tmp_path)
    assert "not known" in said and "dockyard host add" in said


def test_a_ca_that_does_not_match_the_hash_is_refused_and_the_token_kept(
    lab: LabRun, tmp_path: Path
) -> None:
    made, before = lab.cli_json("host", "add", "pinned"), held(lab)
    other = "sha256:" + "0" * 64
    r = agent_join(lab, "pinned", made["token"], other, tmp_path)
    said = refused(lab, before, r, tmp_path)
    assert f"not {other}" in said and "nothing was saved" in said and "Check the URL" in said
    # the agent stopped before offering the token: it is still good for the right server
    url = f"{lab.env['DOCKYARD_URL']}/v1/join"
    assert httpx.post(url, json={"token": made["token"]}, verify=_ca(lab)).status_code == 200
    for token in [t for t in lab.cli_json("token", "list") if t["host"] == "pinned"]:
        lab.cli("token", "delete", str(token["id"]))  # it never registered a host row
    assert held(lab) == before


def _ca(lab: LabRun) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(lab.state / "tls" / "ca.pem"))


def test_a_disabled_host_gets_no_new_instances_and_keeps_its_own(lab: LabRun) -> None:
    kept = create(lab, "kept", "az2")
    assert kept["host"] == "lab2"
    lab.cli("host", "disable", "lab2", "--reason", "new disks")
    try:
        assert lab.cli_json("host", "show", "lab2")["disabled_reason"] == "new disks"
        r = lab.cli(
            "server", "create", "shunned", "--image", "demo", "--flavor", "small",
            "--network", "lab", "--availability-zone", "az2", check=False,
        )  # fmt: skip
        assert r.returncode != 0 and "disabled" in r.stderr and "new disks" in r.stderr, r
        elsewhere = [create(lab, f"elsewhere{i}", "az1") for i in range(2)]
        assert {s["host"] for s in elsewhere} == {"lab1"}
        time.sleep(2)  # a disable must not touch what runs there
        now = lab.cli_json("server", "show", "kept")
        assert (now["status"], now["power_state"]) == ("ACTIVE", "running")
        assert probe_ping(lab, kept["ip"])
    finally:
        lab.cli("host", "enable", "lab2")
    back = create(lab, "back", "az2")
    assert back["host"] == "lab2"
    for name in ("kept", "back", "elsewhere0", "elsewhere1"):
        lab.cli("server", "delete", name, "--wait")


def _links(lab: LabRun, host: str) -> set[str]:
    ns = next(h for h in lab.record()["hosts"] if h["name"] == host)["netns"]
    out = sh("ip", "-n", ns, "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _files_of(lab: LabRun, host: str, instance_id: str) -> list[str]:
    """Paths under the host's directory (its dockerd's data root aside) named by the
    instance's id."""
    root = Path(next(h for h in lab.record()["hosts"] if h["name"] == host)["dir"])
    return [str(p) for p in root.rglob(f"*{instance_id}*") if "docker" not in p.parts]


def test_a_delete_while_the_agent_is_down_is_carried_out_when_it_returns(lab: LabRun) -> None:
    before = _links(lab, "lab2")
    doomed = create(lab, "doomed", "az2")
    assert doomed["host"] == "lab2"
    ports = _links(lab, "lab2") - before
    assert ports, "the instance has no port on lab2"
    assert _files_of(lab, "lab2", doomed["id"]), "nothing of the instance under lab2's dir"
    lab.lab("host", "stop", "lab2")  # the agent only: dockerd and the instance run on
    wait_for(lambda: lab.cli_json("host", "show", "lab2")["state"] == "down", 30, "lab2 down")
    assert lab.cli_json("server", "show", "doomed")["power_state"] == "unknown"
    said = lab.cli("server", "delete", "doomed", "--wait").stdout  # answers, waits not
    assert "recorded (DELETING)" in said and "host lab2 is down" in said, said
    assert lab.cli_json("server", "show", "doomed")["status"] == "DELETING"
    time.sleep(2)  # nobody on lab2 to carry it out yet
    assert docker_on(lab, "lab2", "ps", "-q", "--filter", f"name=dy-{doomed['id']}").stdout
    lab.lab("host", "start", "lab2")
    gone = f"{lab.env['DOCKYARD_URL']}/v1/instances/{doomed['id']}/watch"
    auth = {"authorization": f"Bearer {lab.env['DOCKYARD_TOKEN']}"}
    wait_for(
        lambda: httpx.get(gone, headers=auth, verify=_ca(lab)).status_code == 410,
        60,
        "the returning agent to carry out the delete (the instance DELETED)",
        interval=0.5,
    )
    assert "doomed" not in {s["name"] for s in lab.cli_json("server", "list")}
    left = docker_on(lab, "lab2", "ps", "-a", "-q", "--filter", f"name=dy-{doomed['id']}")
    assert left.returncode == 0 and not left.stdout.strip(), left
    assert not _links(lab, "lab2") & ports
    assert not _files_of(lab, "lab2", doomed["id"])
    ns = next(h for h in lab.record()["hosts"] if h["name"] == "lab2")["netns"]
    rules = sh("ip", "netns", "exec", ns, "nft", "list", "ruleset").stdout
    assert not [p for p in ports if p in rules]


def test_an_expired_join_token_is_refused(
    lab: LabRun, short_lived: dict[str, Any], tmp_path: Path
) -> None:
    expires = datetime.fromisoformat(short_lived["expires_at"].replace("Z", "+00:00"))
    expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds() + 1))
    before = held(lab)
    r = agent_join(lab, "late", short_lived["token"], short_lived["ca_hash"], tmp_path)
    said = refused(lab, before, r, tmp_path)
    assert "expired" in said and "`dockyard host add late`" in said
