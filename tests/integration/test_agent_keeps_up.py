"""The agent on a busy host: its own CPU cgroup with ten times an instance's weight
(every thread in it, the same after a restart), and the instances' /proc views on a
tmpfs under /run, where their containers mount them from (compute/procfs.py)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from dockyard import cgroups
from dockyard.lab.daemons import agent_views
from dockyard.lab.procs import wait_for

pytestmark = [pytest.mark.root]


def _cpu_dir(pid: int | str) -> Path:
    cg = cgroups.of_pid(pid)
    return cg.dirs["cpu"] if cg.version == 1 else cg.dirs[""]


def _assert_in_own_cgroup(cluster) -> None:
    pid = cluster.agent_proc.pid
    where = _cpu_dir(pid)
    assert where.name == cluster.agent_cgroup and where != _cpu_dir("self")
    cg = cgroups.of_pid(pid)
    expected = cgroups.AGENT_SHARES if cg.version == 1 else cgroups.AGENT_WEIGHT
    assert cgroups.cpu_weight(cg) == expected
    threads = [t.name for t in Path(f"/proc/{pid}/task").iterdir()]
    assert len(threads) > 1  # the agent's loops run on threads: each one is in it
    assert {_cpu_dir(f"{pid}/task/{t}") for t in threads} == {where}


def test_the_agent_has_its_own_cgroup_and_keeps_views_under_run(cluster):
    _assert_in_own_cgroup(cluster)
    s = cluster.create("keepup")
    views = agent_views(cluster.root / "agent") / s["id"]
    mounts = {m["Destination"]: m["Source"] for m in cluster.inspect(s["id"])["Mounts"]}
    assert Path(mounts["/proc/meminfo"]) == views / "meminfo"
    assert Path(mounts["/run/dockyard"]) == views
    assert views.is_relative_to("/run")
    assert not (cluster.root / "agent" / "instances" / s["id"] / "proc").exists()
    out = cluster.container(s["id"]).exec_run(["cat", "/proc/meminfo"]).output.decode()
    total = next(line.split() for line in out.splitlines() if line.startswith("MemTotal:"))
    assert total[1:] == ["131072", "kB"]  # the flavor's 128 MB, read from /run

    cluster.kill_agent(signal.SIGTERM)  # a restart finds its cgroup made: the same
    before = (views / "uptime").stat().st_mtime
    cluster.start_agent()
    wait_for(lambda: (views / "uptime").stat().st_mtime > before, 60, "the view refreshed")
    _assert_in_own_cgroup(cluster)  # the refresh runs on a thread: they are all started

    cluster.api("DELETE", f"/instances/{s['id']}")
    wait_for(lambda: not views.exists(), 60, "the view directory to go with the instance")
