"""cgroup parsing on recorded trees: v2 (hosts in the field) and v1 (this machine)."""

from pathlib import Path

from dockyard import cgroups

V2_FILES = {
    "pids.current": "37\n",
    "pids.max": "200\n",
    "pids.events": "max 12\n",
    "memory.current": "52428800\n",
    "memory.max": "536870912\n",
    "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    "cpu.stat": "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n"
    "nr_periods 50\nnr_throttled 7\nthrottled_usec 3500\n",
    "cpu.max": "50000 100000\n",
    "cpuset.cpus.effective": "2-3\n",
}
V1_FILES = {
    "pids": {"pids.current": "5\n", "pids.max": "max\n", "pids.events": "max 0\n"},
    "memory": {
        "memory.usage_in_bytes": "1048576\n",
        "memory.limit_in_bytes": "9223372036854771712\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    },
    "cpu": {
        "cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 2000000\n",
        "cpu.cfs_quota_us": "-1\n",
        "cpu.cfs_period_us": "100000\n",
    },
    "cpuacct": {"cpuacct.usage": "5000000\n"},
    "cpuset": {"cpuset.cpus": "0\n"},
}


def _proc(tmp: Path, text: str) -> Path:
    (tmp / "proc" / "42").mkdir(parents=True)
    (tmp / "proc" / "42" / "cgroup").write_text(text)
    return tmp / "proc"


def test_v2_unified_tree(tmp_path):
    d = tmp_path / "fs" / "system.slice" / "docker-abc.scope"
    d.mkdir(parents=True)
    for name, text in V2_FILES.items():
        (d / name).write_text(text)
    proc = _proc(tmp_path, "0::/system.slice/docker-abc.scope\n")
    cg = cgroups.of_pid(42, proc, tmp_path / "fs")
    assert cg.version == 2
    assert cgroups.pids(cg) == cgroups.Pids(current=37, limit=200, hit=12)
    assert cgroups.memory(cg) == cgroups.Memory(usage=52428800, limit=536870912, oom_kills=1)
    assert cgroups.cpu(cg) == cgroups.Cpu(123456, 7, 3500, 0.5)
    assert cgroups.cpuset(cg) == "2-3"


def test_v1_hybrid_tree(tmp_path):
    fs = tmp_path / "fs"
    for controller, files in V1_FILES.items():
        d = fs / controller / "dockyard" / "abc"
        d.mkdir(parents=True)
        for name, text in files.items():
            (d / name).write_text(text)
    proc = _proc(
        tmp_path,
        "\n".join(
            [
                "12:pids:/dockyard/abc",
                "11:memory:/dockyard/abc",
                "10:cpu:/dockyard/abc",
                "9:cpuacct:/dockyard/abc",
                "8:cpuset:/dockyard/abc",
                "1:name=systemd:/dockyard/abc",
                "0::/dockyard/abc",
            ]
        )
        + "\n",
    )
    cg = cgroups.of_pid(42, proc, fs)
    assert cg.version == 1
    assert cgroups.pids(cg) == cgroups.Pids(current=5, limit=None, hit=0)
    assert cgroups.memory(cg) == cgroups.Memory(usage=1048576, limit=None, oom_kills=2)
    assert cgroups.cpu(cg) == cgroups.Cpu(5000, 4, 2000, None)
    assert cgroups.cpuset(cg) == "0"


def test_monitor_counters_read_the_same_on_v1_and_v2(tmp_path):
    d = tmp_path / "v2"
    d.mkdir()
    for name, text in V2_FILES.items():
        (d / name).write_text(text)
    v2 = cgroups.Cgroup(2, {"": d})
    assert (cgroups.oom_kills(v2), cgroups.pids_hit(v2)) == (1, 12)
    assert cgroups.throttling(v2) == (7, 3500) and cgroups.cpu_cap(v2) == 0.5
    v1 = {}
    for controller, files in V1_FILES.items():
        v1[controller] = tmp_path / "v1" / controller
        v1[controller].mkdir(parents=True)
        for name, text in files.items():
            (v1[controller] / name).write_text(text)
    cg = cgroups.Cgroup(1, v1)
    assert (cgroups.oom_kills(cg), cgroups.pids_hit(cg)) == (2, 0)
    assert cgroups.throttling(cg) == (4, 2000) and cgroups.cpu_cap(cg) is None
