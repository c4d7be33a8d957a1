"""The instance comes back running and reachable after every kind of restart."""

from __future__ import annotations

import signal

import pytest

from tests.integration.cluster import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _reachable(cluster, ip, timeout=30):
    wait_for(lambda: cluster.probe.ping(ip), timeout, f"{ip} to answer pings", interval=0.2)


def _no_leaks(cluster, live_ids):
    """Exactly the live instances' containers and veths, once things settle: the kernel
    tears a dead container's network namespace (and its veth) down asynchronously."""
    from dockyard.network.plumbing import host_ifname

    names = {f"dy-{i}" for i in live_ids}
    links = sorted(host_ifname(i) for i in live_ids)
    wait_for(
        lambda: set(cluster.containers()) == names and sorted(cluster.links()) == links,
        15,
        f"containers {sorted(names)} and links {links} (have {cluster.links()})",
        interval=0.2,
    )


def _started_again(cluster, instance_id, before):
    """The container runs again, started after ``before`` (a dying namespace can still
    answer pings for a moment, so reachability alone does not prove the restart)."""

    def again():
        c = cluster.container(instance_id)
        return c.status == "running" and c.attrs["State"]["StartedAt"] != before

    wait_for(again, 15, "the container to run again")


def test_container_restarted_behind_the_agents_back(cluster):
    s = cluster.create("rb")
    c = cluster.container(s["id"])
    c.restart(timeout=1)
    _reachable(cluster, s["ip"], timeout=15)
    c.reload()
    started = c.attrs["State"]["StartedAt"]
    c.stop(timeout=1)  # stopped behind our back: the agent owns restarts
    _started_again(cluster, s["id"], started)
    _reachable(cluster, s["ip"], timeout=15)
    assert cluster.cli_json("server", "show", "rb")["power_state"] == "running"
    _no_leaks(cluster, [s["id"]])
    cluster.cli("server", "delete", "rb", "--wait")


def test_agent_killed_mid_spawn(cluster):
    cluster.kill_agent(signal.SIGTERM)
    cluster.start_agent(DOCKYARD_FAULT_PAUSE_AFTER_CREATE="30")
    s = cluster.api(
        "POST",
        "/instances",
        json={"name": "mid", "image": "demo", "flavor": "small", "network": "net"},
    )
    wait_for(lambda: f"dy-{s['id']}" in cluster.containers(), 30, "the container to be created")
    cluster.kill_agent(signal.SIGKILL)  # between create and start
    assert cluster.container(s["id"]).status == "created"
    cluster.start_agent()
    wait_for(
        lambda: cluster.api("GET", f"/instances/{s['id']}")["status"] == "ACTIVE",
        30,
        "the instance to become ACTIVE",
    )
    _reachable(cluster, s["ip"])
    _no_leaks(cluster, [s["id"]])
    cluster.cli("server", "delete", "mid", "--wait")
    assert cluster.links() == [] and cluster.agent_files() == []


def test_dockerd_restart(cluster):
    s = cluster.create("dr")
    cluster.dockerd.restart()
    _reachable(cluster, s["ip"], timeout=60)
    wait_for(
        lambda: cluster.api("GET", f"/instances/{s['id']}")["power_state"] == "running",
        30,
        "power_state running",
    )
    _no_leaks(cluster, [s["id"]])
    cluster.cli("server", "delete", "dr", "--wait")


def test_agent_restart_without_the_server(cluster):
    s = cluster.create("offline")
    cluster.kill_agent(signal.SIGKILL)
    assert cluster.server_proc is not None
    cluster.server_proc.terminate()
    cluster.server_proc.wait(30)
    try:
        cluster.container(s["id"]).restart(timeout=1)
        # the agent learns what to run from its own disk and re-plumbs without the server
        cluster.start_agent(wait=False)
        _reachable(cluster, s["ip"])
    finally:
        cluster.start_server()
    wait_for(cluster.host_up, 30, "the agent to reach the server again")
    cluster.cli("server", "delete", "offline", "--wait")
    assert cluster.links() == []
