"""The agent on a busy host: its own CPU cgroup with ten times an instance's weight
(every thread in it, the same after a restart), and the instances' /proc views on a
tmpfs under /run, where their containers mount them from (compute/procfs.py)."""

from __future__ import annotations

import signal
import subprocess
import time
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


def test_a_kept_cgroup_sees_a_task_started_after_its_first_read(tmp_path: Path) -> None:
    """v1 hands a kept tasks file's old pid list out again while it is read every
    second: a busy loop exec'd into a container never counted in its load."""
    mine = cgroups.of_pid("self")
    base = mine.dirs["cpu"] if mine.version == 1 else mine.dirs[""]
    where = base / f"dyk-kept-{tmp_path.name[-12:]}"
    where.mkdir()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        p = subprocess.Popen(["sleep", "60"])
        procs.append(p)
        (where / "cgroup.procs").write_text(str(p.pid))
        return p.pid

    try:
        first = start()
        cg = cgroups.of_pid(first, keep_open=True)
        seen = []
        for _ in range(3):  # read as the agent does, more often than once a second
            seen.append(cgroups.threads(cg))
            time.sleep(0.3)
        second = start()
        assert seen[-1] == [first]
        assert second in cgroups.threads(cg)
        cg.close()
    finally:
        for p in procs:
            p.kill()
            p.wait()
        wait_for(lambda: not (where / "cgroup.procs").read_text().strip(), 10, "empty")
        where.rmdir()
