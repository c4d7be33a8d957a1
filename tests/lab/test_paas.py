"""The PaaS on a 3-host lab, as a product team uses it: a stack spread over the hosts,
an in-place deploy that keeps the IPs and never drops below its budget, a deploy
whose health check fails and rolls itself back, a rollback by hand, scaling, and a
stopped host's member replaced elsewhere. Also a plain instance with env, a config
file and an http check, rebuilt in place (`server create|rebuild`), the agent
probing from the instance's own namespace (a lab host's agent has no route to it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.lab.procs import wait_for
from tests.lab.conftest import LabRun, running_lab

RC_LOCAL = """#!/bin/sh
mkdir -p /www && echo "$APP_MODE" > /www/index.html
httpd -p 8080 -h /www
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    with running_lab("--hosts", "3", "--host-down-after", "20") as run:
        rc = tmp_path_factory.mktemp("paas") / "rc.local"
        rc.write_text(RC_LOCAL)
        rc.chmod(0o755)  # the CLI sends the local file's mode: the init runs it
        run.rc_local = rc  # type: ignore[attr-defined]
        run.cli("app", "create", "shop")
        run.cli(
            "stack", "create", "shop/web", "--image", "demo", "--flavor", "small",
            "--network", "lab", "--replicas", "3", "--env", "APP_MODE=v1",
            "--config-file", f"{rc}:/etc/rc.local", "--health-http", "8080/index.html",
            "--max-unavailable", "1", "--progress-deadline", "40", "--wait",
        )  # fmt: skip
        yield run


def _stack(lab: LabRun) -> Any:
    return lab.cli_json("stack", "show", "shop/web")


class ReadySampler:
    """Samples the stack's ready count every few tenths of a second during a deploy."""

    def __init__(self, lab: LabRun) -> None:
        self.lab, self.seen, self.stop = lab, [], threading.Event()
        self.states: list[Any] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            st = _stack(self.lab)
            self.seen.append(st["ready"])
            self.states.append(
                [(m["name"], m["release"], m["task_state"], m["health"]) for m in st["instances"]]
            )
            self.stop.wait(0.2)

    def __enter__(self) -> ReadySampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_a_three_replica_stack_lands_on_three_hosts_healthy(lab: LabRun) -> None:
    st = _stack(lab)
    assert st["ready"] == 3 and st["current_release"] == 1
    assert len({m["host"] for m in st["instances"]}) == 3
    assert {m["health"] for m in st["instances"]} == {"healthy"}
    endpoints = lab.cli_json("stack", "endpoints", "shop/web")["endpoints"]
    assert sorted(e["ip"] for e in endpoints) == sorted(m["ip"] for m in st["instances"])


def test_an_in_place_deploy_keeps_ips_and_its_budget(lab: LabRun) -> None:
    before = {m["name"]: (m["ip"], m["host"]) for m in _stack(lab)["instances"]}
    with ReadySampler(lab) as sampler:
        lab.cli("stack", "deploy", "shop/web", "--env", "APP_MODE=v2", "--wait")
    st = _stack(lab)
    assert {m["name"]: (m["ip"], m["host"]) for m in st["instances"]} == before
    assert {m["release"] for m in st["instances"]} == {2} and st["ready"] == 3
    assert st["deploy"]["status"] == "succeeded"
    # replicas - max_unavailable, in every sample (the members' states say why if not)
    assert min(sampler.seen) >= 2, "\n".join(map(str, sampler.states))
    inside = lab.cli("server", "show", st["instances"][0]["name"], "-f", "json").stdout
    assert '"APP_MODE": "v2"' in inside or '"APP_MODE":"v2"' in inside


def test_a_deploy_that_never_gets_healthy_rolls_itself_back(lab: LabRun) -> None:
    before = {m["name"]: m["ip"] for m in _stack(lab)["instances"]}
    with ReadySampler(lab) as sampler:
        r = lab.cli(
            "stack", "deploy", "shop/web", "--health-http", "8080/missing", "--wait",
            check=False,
        )  # fmt: skip
    assert r.returncode != 0 and "roll" in (r.stdout + r.stderr)
    st = _stack(lab)
    releases = lab.cli_json("release", "list", "shop/web")
    assert [x["result"] for x in releases if x["number"] == 3] == ["rolled-back"]
    wait_for(lambda: _stack(lab)["ready"] == 3, 120, "the stack back to 3 ready")
    st = _stack(lab)
    assert {m["name"]: m["ip"] for m in st["instances"]} == before
    assert min(sampler.seen) >= 2, sampler.seen


def test_rollback_to_release_one_and_scale(lab: LabRun) -> None:
    lab.cli("stack", "rollback", "shop/web", "--to", "1", "--wait")
    st = _stack(lab)
    newest = lab.cli_json("release", "list", "shop/web")[-1]
    assert newest["env"] == {"APP_MODE": "v1"} and st["current_release"] == newest["number"]
    lab.cli("stack", "scale", "shop/web", "--replicas", "4")
    wait_for(lambda: _stack(lab)["ready"] == 4, 120, "4 ready")
    lab.cli("stack", "scale", "shop/web", "--replicas", "2")
    wait_for(lambda: len(_stack(lab)["instances"]) == 2, 120, "2 members")


def test_a_stopped_hosts_member_is_replaced_elsewhere(lab: LabRun) -> None:
    st = _stack(lab)
    replicas, victim = st["replicas"], st["instances"][0]["host"]
    lab.lab("host", "stop", victim)
    try:

        def replaced() -> bool:
            now = _stack(lab)
            ready = [m for m in now["instances"] if m["ready"]]
            return len(ready) == replicas and victim not in {m["host"] for m in ready}

        wait_for(replaced, 180, f"the member on {victim} replaced elsewhere")
        events = " ".join(e["message"] for e in _stack(lab)["events"])
        assert f"host {victim} is down: replaced elsewhere" in events
    finally:
        lab.lab("host", "start", victim)
    # its old member's deletion is carried out when the host is back
    wait_for(lambda: len(_stack(lab)["instances"]) == replicas, 180, "the old member gone")


def test_a_plain_instance_with_a_check_goes_healthy_and_a_rebuild_keeps_its_ip(
    lab: LabRun,
) -> None:
    rc = lab.rc_local  # type: ignore[attr-defined]
    lab.cli(
        "server", "create", "checked", "--image", "demo", "--flavor", "small",
        "--network", "lab", "--env", "APP_MODE=one", "--config-file", f"{rc}:/etc/rc.local",
        "--health-http", "8080/index.html", "--wait",
    )  # fmt: skip

    def shown() -> Any:
        return lab.cli_json("server", "show", "checked")

    wait_for(lambda: (shown().get("health") or {}).get("status") == "healthy", 120, "healthy")
    before = shown()
    lab.cli("server", "rebuild", "checked", "--env", "APP_MODE=two", "--wait")
    wait_for(lambda: (shown().get("health") or {}).get("status") == "healthy", 120, "healthy")
    after = shown()
    assert (after["ip"], after["mac"], after["host"]) == (
        before["ip"], before["mac"], before["host"]
    )  # fmt: skip
    assert after["env"] == {"APP_MODE": "two"}
    lab.cli("server", "delete", "checked", "--wait")
