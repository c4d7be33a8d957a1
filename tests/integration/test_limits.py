"""Every limit is enforced by the kernel; figures are printed (-s) as well as checked.

Tolerances are the issue's: a limit holds within 15 % (rates) or exactly
(pids); nothing here asserts on how fast Dockyard itself is.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from dockyard import cgroups
from tests.integration.cluster import run, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


NET50 = ("--vcpus", "1", "--memory", "128", "--net-ingress", "50mbit", "--net-egress", "50mbit")


def _flavor(cluster, name, *opts):
    if cluster.api("GET", f"/flavors/{name}", check=False).get("status") == 404:
        cluster.cli("flavor", "create", name, *opts)


def _event(cluster, name, kind):
    """Wait until `server show` lists an event of ``kind``; return its message."""

    def found():
        events = cluster.cli_json("server", "show", name)["events"]
        return next((e["message"] for e in events if e["kind"] == kind), None)

    return wait_for(found, 20, f"a {kind} event on {name}", interval=0.5)


def _instance(cluster, name, flavor):
    s = cluster.create(name, flavor=flavor)
    c = cluster.container(s["id"])
    return s, c, cgroups.of_pid(c.attrs["State"]["Pid"])


def test_fork_bomb_stops_at_the_pids_limit_and_the_host_lives(cluster):
    _flavor(cluster, "pid200", "--vcpus", "1", "--memory", "256", "--pids", "200")
    s, c, cg = _instance(cluster, "bomb", "pid200")
    c.exec_run(
        ["sh", "-c", "i=0; while [ $i -lt 400 ]; do sleep 120 & i=$((i+1)); done"], detach=True
    )
    time.sleep(3)
    p = cgroups.pids(cg)
    print(f"\nfork bomb: {p.current} tasks (limit {p.limit}), {p.hit} forks refused")
    assert p.limit == 200 and 190 <= p.current <= 200 and p.hit > 0
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes
    assert "pids limit of 200" in _event(cluster, "bomb", "pids-limit")
    assert "pids-limit" in cluster.cli("server", "show", "bomb").stdout
    cluster.cli("server", "delete", "bomb", "--wait")


def test_memory_hog_is_oom_killed_inside_its_cgroup_only(cluster):
    _flavor(cluster, "mem64", "--vcpus", "1", "--memory", "64")
    s, c, cg = _instance(cluster, "hog", "mem64")
    r = c.exec_run(["tail", "/dev/zero"])  # buffers forever: grows until killed
    m = cgroups.memory(cg)
    print(f"\nmemory hog: exit {r.exit_code}, {m.oom_kills} OOM kill(s), limit {m.limit} bytes")
    assert r.exit_code == 137 and m.oom_kills >= 1 and m.limit == 64 * 2**20
    shown = cluster.cli_json("server", "show", "hog")
    assert shown["status"] == "ACTIVE"  # only the hog died, not the instance
    assert cluster.probe.ping(s["ip"])
    assert "OOM-killed at the 64 MB" in _event(cluster, "hog", "oom-kill")
    cluster.cli("server", "delete", "hog", "--wait")


def test_busy_loop_under_half_a_core_cap(cluster):
    _flavor(cluster, "cap05", "--vcpus", "1", "--memory", "64", "--cpu-cap", "0.5")
    s, c, cg = _instance(cluster, "busy", "cap05")
    c.exec_run(["sh", "-c", "while :; do :; done"], detach=True)
    time.sleep(0.5)
    before, t0 = cgroups.cpu(cg), time.monotonic()
    time.sleep(3)
    after, t1 = cgroups.cpu(cg), time.monotonic()
    cores = (after.usage_usec - before.usage_usec) / 1e6 / (t1 - t0)
    print(
        f"\nbusy loop under a 0.5-core cap: {cores:.3f} cores, "
        f"{after.nr_throttled - before.nr_throttled} throttled periods"
    )
    assert after.quota_cores == 0.5
    assert 0.35 <= cores <= 0.5 * 1.1
    assert "throttled" in _event(cluster, "busy", "cpu-throttled")
    cluster.cli("server", "delete", "busy", "--wait")


def test_dedicated_instances_never_share_a_core(cluster):
    _flavor(cluster, "pin1", "--vcpus", "1", "--memory", "64", "--cpu-policy", "dedicated")
    a, _, cga = _instance(cluster, "pin-a", "pin1")
    b, _, cgb = _instance(cluster, "pin-b", "pin1")
    sets = {cgroups.cpuset(cga), cgroups.cpuset(cgb)}
    print(f"\ndedicated cpusets: {sorted(sets)}")
    assert len(sets) == 2 and all(x.isdigit() for x in sets)
    pinned = cluster.api("GET", "/hosts/itest")["pinned_cores"]
    assert sorted(pinned.values()) == sorted([a["id"], b["id"]])
    cluster.cli("server", "delete", "pin-a", "--wait")
    cluster.cli("server", "delete", "pin-b", "--wait")


def test_direct_io_writes_hold_the_write_limit(cluster):
    _flavor(cluster, "disk10", "--vcpus", "1", "--memory", "128", "--disk-write-bps", "10MB")
    s, c, _ = _instance(cluster, "writer", "disk10")
    t0 = time.monotonic()
    r = c.exec_run(["dd", "if=/dev/zero", "of=/root/blob", "bs=1M", "count=30", "oflag=direct"])
    elapsed = time.monotonic() - t0
    rate = 30 * 2**20 / elapsed
    print(f"\ndirect-IO write under 10 MB/s: {rate / 2**20:.2f} MB/s ({elapsed:.2f} s for 30 MB)")
    assert r.exit_code == 0, r.output.decode()
    assert rate <= 10 * 2**20 * 1.15
    cluster.cli("server", "delete", "writer", "--wait")


def _iperf(cluster, pid: int, reverse: bool) -> float:
    """Mbit/s of a 3 s TCP stream between the instance's netns and the probe."""
    server_ip = cluster.probe.address.split("/")[0]
    srv = subprocess.Popen(
        ["ip", "netns", "exec", cluster.probe.ns, "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        args = ["nsenter", "-t", str(pid), "-n", "iperf3", "-c", server_ip, "-t", "3", "-J"]
        out = run(*args, *(["-R"] if reverse else []), timeout=30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        srv.wait(10)


def test_network_limits_hold_both_ways(cluster):
    _flavor(cluster, "net50", *NET50)
    s, c, _ = _instance(cluster, "netvm", "net50")
    pid = c.attrs["State"]["Pid"]
    egress, ingress = _iperf(cluster, pid, reverse=False), _iperf(cluster, pid, reverse=True)
    print(f"\n50 mbit limits: egress {egress:.1f} Mbit/s, ingress {ingress:.1f} Mbit/s")
    assert 50 * 0.85 <= egress <= 50 * 1.15
    assert 50 * 0.85 <= ingress <= 50 * 1.15
    cluster.cli("server", "delete", "netvm", "--wait")
    assert cluster.links() == []  # the IFB went with the instance


def test_live_resize_changes_cgroups_without_a_restart(cluster):
    _flavor(
        cluster,
        "rs-small",
        "--vcpus",
        "1",
        "--memory",
        "128",
        "--cpu-policy",
        "dedicated",
        "--pids",
        "100",
    )
    _flavor(
        cluster,
        "rs-big",
        "--vcpus",
        "2",
        "--memory",
        "256",
        "--cpu-policy",
        "dedicated",
        "--pids",
        "300",
    )
    _flavor(cluster, "rs-tiny", "--vcpus", "2", "--memory", "32", "--cpu-policy", "dedicated")
    _flavor(cluster, "rs-huge", "--vcpus", "1", "--memory", "999999")
    s, c, cg = _instance(cluster, "grow", "rs-small")
    started = c.attrs["State"]["StartedAt"]
    assert cgroups.cpuset(cg) == "0" and cgroups.memory(cg).limit == 128 * 2**20

    out = cluster.cli_json("server", "resize", "grow", "--flavor", "rs-big", "--wait")
    assert out["status"] == "ACTIVE" and out["flavor"] == "rs-big" and out["memory_mb"] == 256
    c.reload()
    assert c.attrs["State"]["StartedAt"] == started  # not restarted
    assert cgroups.cpuset(cg) in ("0-1", "0,1")
    assert cgroups.memory(cg).limit == 256 * 2**20 and cgroups.pids(cg).limit == 300
    inside = c.exec_run(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpuset/cpuset.cpus"
    )
    print(f"\nafter a live resize, inside the container: {inside.output.decode().split()}")
    assert str(256 * 2**20) in inside.output.decode() and "0-1" in inside.output.decode()
    log = cluster.cli_json("server", "actions", "grow")
    assert log[-1]["action"] == "resize" and log[-1]["message"] == "rs-small -> rs-big"
    assert log[-1]["result"] == "success"

    # shrinking below what it uses is refused by the agent, and the old flavor is back
    assert c.exec_run("dd if=/dev/zero of=/dev/shm/fill bs=1M count=60").exit_code == 0
    r = cluster.cli("server", "resize", "grow", "--flavor", "rs-tiny", "--wait", check=False)
    print(f"shrink refused: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 1 and "cannot shrink memory to 32 MB" in r.stderr
    shown = cluster.cli_json("server", "show", "grow")
    assert shown["flavor"] == "rs-big" and shown["status"] == "ACTIVE"
    assert cgroups.memory(cg).limit == 256 * 2**20

    # a flavor that does not fit on this host: 409, and the instance is untouched
    r = cluster.cli("server", "resize", "grow", "--flavor", "rs-huge", check=False)
    assert r.returncode == 1 and "does not fit on itest" in r.stderr
    assert "--allow-migrate" in r.stderr  # what an admin can do instead
    c.reload()
    assert c.attrs["State"]["StartedAt"] == started
    cluster.cli("server", "delete", "grow", "--wait")


def test_shared_instances_move_off_a_core_when_it_is_pinned(cluster):
    _flavor(cluster, "pin1", "--vcpus", "1", "--memory", "64", "--cpu-policy", "dedicated")
    s, c, cg = _instance(cluster, "sharer", "small")
    started = c.attrs["State"]["StartedAt"]
    assert cgroups.cpuset(cg) == "0-1"
    p, _, cgp = _instance(cluster, "pinner", "pin1")
    mine = cgroups.cpuset(cgp)
    other = {"0": "1", "1": "0"}[mine]
    wait_for(lambda: cgroups.cpuset(cg) == other, 15, "the shared pool to shrink")
    c.reload()
    assert c.attrs["State"]["StartedAt"] == started  # live, no restart
    cluster.cli("server", "delete", "pinner", "--wait")
    wait_for(lambda: cgroups.cpuset(cg) == "0-1", 15, "the shared pool to grow back")
    print(f"\nshared cpuset: 0-1 -> {other} while core {mine} was pinned -> 0-1")
    cluster.cli("server", "delete", "sharer", "--wait")


def test_limits_come_back_after_the_container_restarts_behind_our_back(cluster):
    from dockyard.network.plumbing import host_ifname, ifb_ifname

    _flavor(cluster, "net50", *NET50)
    _flavor(
        cluster,
        "net50-pids",
        "--vcpus",
        "1",
        "--memory",
        "128",
        "--pids",
        "150",
        "--net-ingress",
        "50mbit",
        "--net-egress",
        "50mbit",
    )
    s, c, _ = _instance(cluster, "again", "net50")
    # a live resize changes pids.max in the cgroup only; a restart must not lose it
    cluster.cli("server", "resize", "again", "--flavor", "net50-pids", "--wait")
    c.restart(timeout=1)
    wait_for(lambda: cluster.probe.ping(s["ip"]), 20, "the instance to be re-plumbed")
    c.reload()
    cg = cgroups.of_pid(c.attrs["State"]["Pid"])
    wait_for(lambda: cgroups.pids(cg).limit == 150, 10, "pids.max re-applied")
    qdisc = run("tc", "qdisc", "show", "dev", host_ifname(s["id"])).stdout
    assert "tbf" in qdisc and "ingress" in qdisc
    assert "tbf" in run("tc", "qdisc", "show", "dev", ifb_ifname(s["id"])).stdout
    egress = _iperf(cluster, c.attrs["State"]["Pid"], reverse=False)
    print(f"\nafter a restart behind our back: egress {egress:.1f} Mbit/s under 50 mbit")
    assert egress <= 50 * 1.15
    cluster.cli("server", "delete", "again", "--wait")
