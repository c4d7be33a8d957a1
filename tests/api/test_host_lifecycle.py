"""Host lifecycle: down after missed heartbeats, disable/enable with a reason, host
show, power unknown on a down host, delete while down, reset-state (issue 10 item 6)."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.db.session import Database
from tests.api.conftest import Cloud
from tests.api.server_process import server
from tests.api.test_roles import _user

# seconds: the server's --host-down-after here (0.5 was too short on a loaded CI
# machine: a host went down between a heartbeat and the very next call)
DOWN_AFTER = 2.0


@pytest.fixture
def quick(tmp_path):
    """A cloud whose hosts are down after DOWN_AFTER seconds without a heartbeat."""
    db = Database(f"sqlite:///{tmp_path}/dockyard.db", timedelta(seconds=DOWN_AFTER))
    token = init(db)
    with TestClient(create_app(db, tmp_path)) as client:
        yield Cloud(client, token)
    db.engine.dispose()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def _running(cloud, token, name="web"):
    iid = cloud.create(name).json()["id"]
    cloud.ok("PUT", f"/agent/instances/{iid}/state", token, json={
        "power_state": "running", "task_done": "spawning"
    })  # fmt: skip
    return iid


def _host_state(cloud, name="h1"):
    return cloud.ok("GET", f"/hosts/{name}")["state"]


def test_disabled_host_takes_no_instances_and_the_refusal_says_why(cloud):
    cloud.catalog()
    cloud.register("h1")
    h = cloud.ok("POST", "/hosts/h1/disable", json={"reason": "maintenance: disk swap"})
    assert (h["enabled"], h["state"]) == (False, "up")
    assert h["disabled_reason"] == "maintenance: disk swap"
    assert cloud.ok("GET", "/hosts/h1")["disabled_reason"] == "maintenance: disk swap"
    r = cloud.create("web")
    assert r.status_code == 409
    assert "disabled: h1 (maintenance: disk swap)" in r.json()["detail"], r.json()
    assert r.json()["reasons"] == {
        "ComputeFilter": "1 of 1 hosts: disabled: h1 (maintenance: disk swap)"
    }
    assert cloud.ok("POST", "/hosts/h1/enable")["disabled_reason"] is None
    assert cloud.create("web").json()["host"] == "h1"


def test_a_disabled_host_keeps_its_instances_and_other_hosts_take_new_ones(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    cloud.register("h2", memory_mb=4096)  # less free RAM: spread picks h1 first
    iid = _running(cloud, token)
    cloud.ok("POST", "/hosts/h1/disable", json={"reason": "draining"})
    assert cloud.create("second").json()["host"] == "h2"
    assert cloud.ok("GET", f"/instances/{iid}")["status"] == "ACTIVE"
    assert [i["id"] for i in cloud.ok("GET", "/agent/hosts/h1/desired", token)["instances"]] == [
        iid
    ]


def test_many_rejected_hosts_are_named_up_to_five_then_counted(cloud):
    cloud.catalog()
    for i in range(7):
        cloud.register(f"h{i}")
        cloud.ok("POST", f"/hosts/h{i}/disable", json={"reason": "rack move"})
    detail = cloud.create("web").json()["detail"]
    assert "ComputeFilter rejected 7 of 7" in detail
    assert "disabled: h4 (rack move)" in detail and "h5" not in detail
    assert "and 2 more" in detail


@pytest.mark.parametrize(
    "body, says",
    [
        ({}, "reason"),
        ({"reason": ""}, "give a reason"),
        ({"reason": "   "}, "give a reason"),
        ({"reason": "x" * 256}, "255"),
        ({"reason": "two\nlines"}, "one line"),
        ({"reason": "ok", "extra": 1}, "extra"),
    ],
)
def test_disable_refuses_a_bad_reason_saying_what_to_change(cloud, body, says):
    cloud.register("h1")
    r = cloud.call("POST", "/hosts/h1/disable", json=body)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert says in r.text
    assert cloud.ok("GET", "/hosts/h1")["enabled"] is True


def test_disable_and_enable_of_an_unknown_host_are_404(cloud):
    for verb, body in (("disable", {"reason": "x"}), ("enable", None)):
        r = cloud.call("POST", f"/hosts/nosuch/{verb}", json=body)
        assert r.status_code == 404 and "dockyard host list" in r.json()["detail"]


def test_only_admins_disable_enable_and_reset(cloud):
    cloud.catalog()
    cloud.register("h1")
    member = _user(cloud, "mia", "member")
    iid = cloud.create("web", token=member).json()["id"]
    for path, body in (
        ("/hosts/h1/disable", {"reason": "x"}),
        ("/hosts/h1/enable", None),
        (f"/instances/{iid}/reset-state", {"vm_state": "active"}),
    ):
        r = cloud.call("POST", path, member, json=body)
        assert r.status_code == 403 and "only admins" in r.json()["detail"], path
    assert cloud.ok("GET", "/hosts/h1")["enabled"] is True
    agent = cloud.agent_token("h1")
    assert cloud.call("POST", "/hosts/h1/disable", agent, json={"reason": "x"}).status_code == 403


def test_host_show_gives_versions_heartbeat_and_reason(cloud):
    cloud.register("h1", agent_version="0.1.0", docker_version="27.5.1")
    cloud.ok("POST", "/hosts/h1/disable", json={"reason": "disk swap"})
    h = cloud.ok("GET", "/hosts/h1")
    assert (h["agent_version"], h["docker_version"]) == ("0.1.0", "27.5.1")
    assert h["state"] == "up" and h["last_heartbeat"] and h["disabled_reason"] == "disk swap"
    token = cloud.agent_token("h1")
    body = {"name": "h1", "cores": 4, "memory_mb": 8192, "disk_gb": 100, "agent_version": "v" * 65}
    r = cloud.call("POST", "/agent/hosts", token, json=body)
    assert r.status_code == 422 and "agent_version" in r.text


def test_a_host_without_heartbeats_is_down_and_its_instances_power_unknown(quick):
    quick.catalog()
    token = quick.register("h1")
    iid = _running(quick, token)
    quick.ok("POST", "/agent/hosts/h1/heartbeat", token)  # a slow machine: beaten just now
    assert quick.ok("GET", f"/instances/{iid}")["power_state"] == "running"
    wait_for(lambda: _host_state(quick) == "down")
    assert quick.ok("GET", f"/instances/{iid}")["power_state"] == "unknown"
    assert quick.ok("GET", "/instances")[0]["power_state"] == "unknown"
    assert quick.ok("GET", "/availability-zones")[0]["hosts_up"] == 0
    r = quick.create("second")
    assert r.status_code == 409 and "down: h1" in r.json()["detail"]
    quick.ok("POST", "/agent/hosts/h1/heartbeat", token)
    assert _host_state(quick) == "up"
    assert quick.ok("GET", f"/instances/{iid}")["power_state"] == "running"


def test_delete_while_the_host_is_down_is_recorded_and_carried_out_on_return(quick):
    quick.catalog()
    token = quick.register("h1")
    iid = _running(quick, token)
    wait_for(lambda: _host_state(quick) == "down")
    r = quick.call("DELETE", f"/instances/{iid}")
    assert r.status_code == 202
    out = r.json()
    assert (out["task_state"], out["status"], out["power_state"]) == (
        "deleting", "DELETING", "unknown"
    )  # fmt: skip
    assert quick.ok("GET", f"/instances/{iid}")["status"] == "DELETING"  # committed, waiting
    # the host returns: its agent re-registers, reads its desired state and removes it
    quick.register("h1")
    (want,) = quick.ok("GET", "/agent/hosts/h1/desired", token)["instances"]
    assert want["id"] == iid and want["power"] == "deleted"
    quick.ok("PUT", f"/agent/instances/{iid}/state", token, json={
        "power_state": "nostate", "gone": True
    })  # fmt: skip
    assert quick.call("GET", f"/instances/{iid}").status_code == 404
    assert quick.ok("GET", "/agent/hosts/h1/desired", token)["instances"] == []


def test_reset_state_unsticks_an_instance_and_logs_it(cloud):
    cloud.catalog()
    cloud.register("h1")
    iid = cloud.create("web").json()["id"]  # spawning; its agent never reports
    out = cloud.ok("POST", f"/instances/{iid}/reset-state", json={"vm_state": "error"})
    assert (out["vm_state"], out["task_state"], out["status"]) == ("error", None, "ERROR")
    assert "reset to error by admin" in out["fault"]
    out = cloud.ok("POST", "/instances/web/reset-state", json={})
    assert (out["vm_state"], out["task_state"], out["fault"]) == ("active", None, None)
    create, *resets = cloud.ok("GET", f"/instances/{iid}/actions")
    assert (create["action"], create["result"]) == ("create", "error")
    assert "abandoned by admin's reset-state" in create["message"]
    assert [(a["action"], a["result"], a["user"]) for a in resets] == [
        ("reset-state", "success", "admin")
    ] * 2
    assert "vm_state building, task_state spawning -> vm_state error" in resets[0]["message"]
    # the instance takes actions again
    assert cloud.call("POST", f"/instances/{iid}/stop").status_code == 202


def test_reset_state_refuses_bad_input(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    iid = cloud.create("web").json()["id"]
    r = cloud.call("POST", "/instances/web/reset-state", json={"vm_state": "building"})
    assert r.status_code == 422 and "'active' or 'error'" in r.text
    r = cloud.call("POST", "/instances/nosuch/reset-state", json={})
    assert r.status_code == 404
    # a failed spawn releases the host: such an instance cannot be made active
    cloud.ok("PUT", f"/agent/instances/{iid}/state", token, json={
        "power_state": "nostate", "task_done": "spawning", "error": "no image"
    })  # fmt: skip
    r = cloud.call("POST", "/instances/web/reset-state", json={"vm_state": "active"})
    assert r.status_code == 409 and "reset it to error, or delete it" in r.json()["detail"]


def test_the_server_takes_host_down_after(tmp_path):
    """--host-down-after reaches the running server: a host silent for longer is down."""
    with server(tmp_path, f"sqlite:///{tmp_path}/d.db", "--host-down-after", "1") as srv:
        admin = {"authorization": f"Bearer {srv.admin}"}
        token = httpx.post(
            f"{srv.url}/v1/agent-tokens", json={"host": "h1"}, headers=admin
        ).json()["token"]
        agent = {"authorization": f"Bearer {token}"}
        body = {"name": "h1", "cores": 2, "memory_mb": 1024, "disk_gb": 10}
        assert httpx.post(f"{srv.url}/v1/agent/hosts", json=body, headers=agent).json()[
            "state"
        ] == "up"

        def state():
            return httpx.get(f"{srv.url}/v1/hosts/h1", headers=admin).json()["state"]

        wait_for(lambda: state() == "down", timeout=10)  # the default would be 30 s
        httpx.post(f"{srv.url}/v1/agent/hosts/h1/heartbeat", headers=agent)
        assert state() == "up"


def test_the_server_refuses_a_nonsense_host_down_after(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "dockyard.api.server", "--state-dir", str(tmp_path),
         "--host-down-after", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "--host-down-after: give 0.1 to 86400" in out.stderr


def test_the_cli_disables_shows_marks_and_records_a_delete_on_a_down_host(tmp_path):
    import os
    import subprocess
    import sys

    with server(tmp_path, f"sqlite:///{tmp_path}/d.db", "--host-down-after", "1") as srv:
        env = {**os.environ, "DOCKYARD_URL": srv.url, "DOCKYARD_TOKEN": srv.admin}

        def cli(*args, ok=True):
            out = subprocess.run(
                [sys.executable, "-m", "dockyard.cli.main", *args],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert (out.returncode == 0) == ok, out.stderr
            return out.stdout + out.stderr

        with httpx.Client(base_url=srv.url, timeout=10) as client:
            _cli_walkthrough(Cloud(client, srv.admin), cli)


def _cli_walkthrough(cloud, cli):
    cloud.catalog()
    token = cloud.register("h1", agent_version="0.1.0", docker_version="27.5.1")
    assert "--reason" in cli("host", "disable", "h1", ok=False)
    said = cli("host", "disable", "h1", "--reason", "maintenance: disk swap")
    assert ", disabled (maintenance: disk swap)" in said  # up or down: 1 s goes fast
    shown = cli("host", "show", "h1")
    assert "disabled (maintenance: disk swap)" in shown and "0.1.0" in shown
    assert "27.5.1" in shown and "last_heartbeat" in shown
    cloud.ok("POST", "/agent/hosts/h1/heartbeat", token)
    assert "disabled: h1 (maintenance: disk swap)" in cloud.create("web").json()["detail"]
    assert "disabled" not in cli("host", "enable", "h1")
    cloud.ok("POST", "/agent/hosts/h1/heartbeat", token)
    iid = _running(cloud, token)
    wait_for(lambda: _host_state(cloud) == "down", timeout=10)
    assert "unknown (host down)" in cli("server", "list")
    started = time.monotonic()
    said = cli("server", "delete", "web", "--wait")
    assert "recorded (DELETING)" in said and "carried out when the host returns" in said
    assert time.monotonic() - started < 10  # does not wait for the host
    out = cli("server", "reset-state", "web", "--error")
    assert "vm_state error, task cleared (ERROR)" in out
    assert cloud.ok("GET", f"/instances/{iid}")["task_state"] is None


def test_the_heartbeats_answer_sets_a_pace_of_three_beats_per_down_after(cloud, tmp_path):
    """A server whose --host-down-after is shorter than the agents' 10 s beat made its
    hosts flap down and up: its answer now tells agents to beat three times within it."""
    token = cloud.register("h1")
    beat = cloud.ok("POST", "/agent/hosts/h1/heartbeat", token)
    assert beat["beat_every"] == 10.0  # the default 30 s: the agents' usual pace
    db = Database(f"sqlite:///{tmp_path}/short.db", timedelta(seconds=6))
    with TestClient(create_app(db, tmp_path / "short")) as client:
        short = Cloud(client, init(db))
        token = short.register("h1")
        beat = short.ok("POST", "/agent/hosts/h1/heartbeat", token)
        assert beat["beat_every"] == 2.0 and beat["generation"] >= 0
        assert _host_state(short) == "up"
    db.engine.dispose()
