"""A real agent's host goes down and comes back: its instances show power unknown
meanwhile, and a delete asked for while it was down is carried out on its return."""

from __future__ import annotations

import signal
import subprocess

import pytest

from dockyard import __version__
from dockyard.lab.daemons import healthy, server_cmd
from tests.integration.cluster import stop_pid, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

DOWN_AFTER = "3"  # seconds; the agent beats every 10 s, so only a dead agent misses it


@pytest.fixture(scope="module")
def quick(cluster):
    """The cluster's server restarted with --host-down-after 3 (same state, same port)."""
    assert cluster.server_proc is not None
    stop_pid(cluster.server_proc)
    log = (cluster.root / "server.log").open("ab")
    cmd = server_cmd(
        cluster.root / "server", f"127.0.0.1:{cluster.port}", "--host-down-after", DOWN_AFTER
    )
    cluster.server_proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    wait_for(lambda: healthy(cluster.url), 30, "the server to answer again")
    wait_for(cluster.host_up, 30, "the agent to beat again")
    return cluster


def _host(cluster):
    return cluster.api("GET", "/hosts/itest")


def test_host_show_names_the_agent_and_dockerd_versions(quick):
    h = quick.cli_json("host", "show", "itest")
    assert h["agent_version"] == __version__ and h["docker_version"]
    assert h["state"] == "up" and h["last_heartbeat"]


def test_a_delete_while_the_host_is_down_is_carried_out_when_it_returns(quick):
    s = quick.create("lc")
    container = quick.container(s["id"])
    quick.kill_agent(signal.SIGKILL)
    wait_for(lambda: _host(quick)["state"] == "down", 20, "the host to be seen down")
    assert quick.cli_json("server", "show", "lc")["power_state"] == "unknown"
    assert "unknown (host down)" in quick.cli("server", "list").stdout
    said = quick.cli("server", "delete", "lc", "--wait").stdout
    assert "recorded (DELETING)" in said and "host itest is down" in said
    container.reload()
    assert container.status == "running"  # nobody there to remove it yet
    quick.start_agent()
    wait_for(
        lambda: quick.api("GET", "/instances") == [],
        60,
        "the returning agent to carry out the delete",
        interval=0.2,
    )
    wait_for(lambda: f"dy-{s['id']}" not in quick.containers(), 30, "the container to go")
    wait_for(lambda: quick.links() == [], 15, "the instance's links to go")
