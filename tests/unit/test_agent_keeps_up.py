"""What lets the agent keep up on a saturated host (compute/procfs.py, cgroups/): views
in a views root on a tmpfs, rebuilt after a reboot; cgroup files kept open per instance
and closed when it goes; the agent's own CPU cgroup, v1 and v2 on recorded files."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard import cgroups
from dockyard.compute import procfs
from dockyard.compute.procfs import ProcView
from dockyard.compute.reconcile import Step
from tests.unit.fakehost import FakeHost, instance, new_id

V2_FILES = {  # a container's cgroup v2 directory, as far as the view reads it
    "memory.stat": "anon 1048576\nfile 2097152\nshmem 0\ninactive_file 1048576\n",
    "memory.current": "4194304\n",
    "memory.max": "67108864\n",
    "cpuset.cpus.effective": "0-1\n",
    "cpu.max": "max 100000\n",
    "cgroup.threads": "42\n43\n",
    "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    "cpu.stat": "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n",
}


@pytest.fixture
def views_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "run" / "views"
    procfs.place_views(root)
    yield root
    procfs.place_views(None)


def fake_host_tree(tmp: Path, containers: int) -> tuple[Path, Path]:
    """(proc, fs): a v2 host whose containers' PID 1 are 100, 101, ..."""
    proc, fs = tmp / "proc", tmp / "fs"
    proc.mkdir()
    (proc / "cpuinfo").write_text("processor\t: 0\n\nprocessor\t: 1\n")
    (proc / "meminfo").write_text("MemTotal:       1000000 kB\nMemFree:        900000 kB\n")
    (proc / "stat").write_text("cpu  1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4\nctxt 9\n")
    (proc / "diskstats").write_text("   8       0 sda 1 0 8 0 1 0 8 0 0 0 0\n")
    for n in range(containers):
        (proc / str(100 + n)).mkdir()
        (proc / str(100 + n) / "cgroup").write_text(f"0::/c{n}\n")
        (fs / f"c{n}").mkdir(parents=True)
        for name, text in V2_FILES.items():
            (fs / f"c{n}" / name).write_text(text)
    return proc, fs


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_kept_files_are_closed_when_the_instance_goes(tmp_path: Path, views_root: Path) -> None:
    proc, fs = fake_host_tree(tmp_path, 3)
    views = ProcView(proc, keep_open=True, fs=fs)
    before = open_fds()
    ids = [new_id() for _ in range(3)]
    for n, iid in enumerate(ids):
        views.prepare(tmp_path / "agent" / iid, 64, 0, [0])
        views.refresh(iid, tmp_path / "agent" / iid, 100 + n, "2026-01-01T00:00:00Z", 0)
        assert "MemTotal:          65536 kB" in (views_root / iid / "meminfo").read_text()
    kept = views.open_files()
    assert kept == 3 * 6  # memory.stat .current .max, cpuset, cpu.max, io.stat (never threads)
    assert open_fds() == before + kept

    for iid in ids:
        views.forget(iid)

    assert views.open_files() == 0
    assert open_fds() == before  # nothing leaked
    assert not any(views_root.iterdir())  # and no view directory stays in the views root


def test_a_kept_file_shows_the_cgroup_now_and_a_new_pid_reopens(tmp_path: Path) -> None:
    proc, fs = fake_host_tree(tmp_path, 2)
    views = ProcView(proc, keep_open=True, fs=fs)
    cg = views.cgroup_of("i", 100)
    assert cgroups.usage_and_limit(cg) == (4194304, 67108864)
    (fs / "c0" / "memory.current").write_text("8388608\n")  # same inode, new figure
    assert cgroups.usage_and_limit(cg) == (8388608, 67108864)
    assert cg.kept() == 2

    again = views.cgroup_of("i", 101)  # the container restarted: its new cgroup

    assert again is not cg and cg.kept() == 0 and again.dirs[""] == fs / "c1"


def test_a_cgroup_gone_closes_every_kept_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, fs = fake_host_tree(tmp_path, 1)
    cg = cgroups.of_pid(100, proc, fs, keep_open=True)
    cgroups.usage_and_limit(cg)
    assert cg.kept() == 2
    before = open_fds()

    def gone(fd: int, n: int, offset: int) -> bytes:
        raise OSError(errno.ENODEV, "No such device")  # what a removed cgroup's file says

    monkeypatch.setattr(os, "pread", gone)
    with pytest.raises(OSError):
        cgroups.usage_and_limit(cg)
    assert cg.kept() == 0 and open_fds() == before - 2


def test_without_keep_open_nothing_stays_open(tmp_path: Path) -> None:
    proc, fs = fake_host_tree(tmp_path, 1)
    before = open_fds()
    cg = cgroups.of_pid(100, proc, fs)
    assert cgroups.memory_stat(cg)["rss"] == 1048576
    assert cg.kept() == 0 and open_fds() == before


def test_views_go_to_the_views_root_unless_one_is_beside_the_state(
    tmp_path: Path, views_root: Path
) -> None:
    fresh, older = tmp_path / "agent" / "instances" / "a", tmp_path / "agent" / "instances" / "b"
    (older / "proc").mkdir(parents=True)  # made before views moved: its container mounts it

    assert procfs.view_dir(fresh) == views_root / "a"
    assert procfs.view_dir(older) == older / "proc"
    procfs.place_views(None)
    assert procfs.view_dir(fresh) == fresh / "proc"


def test_default_views_root_is_on_run_one_per_state_dir() -> None:
    a = procfs.default_views_root(Path("/var/lib/dockyard-agent"))
    b = procfs.default_views_root(Path("/tmp/lab/hosts/h2/agent"))
    assert a == Path("/run/dockyard-agent/var/lib/dockyard-agent/views")
    assert b.is_relative_to(Path("/run/dockyard-agent")) and a != b


def test_views_lost_with_a_reboot_are_written_again_before_the_start(
    tmp_path: Path, views_root: Path
) -> None:
    host, iid = FakeHost(tmp_path), new_id()
    want = instance(iid)
    host.worker().run(Step.spawn, want)
    sources = {m[0] for m in host.driver.inspect(iid).mounts}  # type: ignore[union-attr]
    in_views = {s for s in sources if Path(s).is_relative_to(views_root / iid)}
    assert in_views and all(Path(s).exists() for s in in_views)

    shutil.rmtree(tmp_path / "run")  # the host rebooted: the tmpfs is empty
    host.driver.stop(iid)
    host.worker().run(Step.start, want)

    assert host.driver.inspect(iid).running  # type: ignore[union-attr]
    assert all(Path(s).exists() for s in in_views)  # every bind source is there again
    assert (views_root / iid / "authorized_keys").exists()


def test_place_process_v1_is_idempotent(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()

    for _ in range(2):  # an agent's restart finds it made
        where = cgroups.place_process("dyl1h0/agent", 4242, tmp_path)

    assert where == tmp_path / "cpu" / "dyl1h0" / "agent"
    assert (where / "cpu.shares").read_text() == str(cgroups.AGENT_SHARES)
    assert (where / "cgroup.procs").read_text() == "4242"


def test_place_process_v2_hands_the_cpu_controller_down(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "cgroup.subtree_control").write_text("cpu memory\n")  # already on

    where = cgroups.place_process("lab/agent", 4242, tmp_path)

    assert where == tmp_path / "lab" / "agent"
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu"  # what was written
    assert (tmp_path / "lab" / "cgroup.subtree_control").read_text() == "cpu memory\n"
    assert (where / "cpu.weight").read_text() == str(cgroups.AGENT_WEIGHT)
    assert (where / "cgroup.procs").read_text() == "4242"


@pytest.mark.parametrize("name", ["", "/", "../escape", "a/../../b"])
def test_place_process_refuses_a_path_outside_the_hierarchy(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="below the hierarchy's root"):
        cgroups.place_process(name, 1, tmp_path)


def test_an_agent_without_instances_leaves_nothing_under_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procfs, "RUN_ROOT", tmp_path / "run")
    mine = procfs.default_views_root(Path("/srv/a/agent"))
    other = procfs.default_views_root(Path("/srv/b/agent"))
    assert mine.is_relative_to(tmp_path / "run")
    (mine / "i1").mkdir(parents=True)
    other.mkdir(parents=True)
    procfs.place_views(mine)
    try:
        procfs.tidy_views()
        assert (mine / "i1").exists()  # an instance's view stays
        (mine / "i1").rmdir()
        procfs.tidy_views()
    finally:
        procfs.place_views(None)
    assert not mine.exists() and not mine.parent.exists() and other.exists()


def test_view_rounds_start_at_a_fixed_rate_and_a_late_one_brings_no_burst(tmp_path: Path) -> None:
    """A round of 0.6 s (200 instances on a saturated host) used to be followed by a
    whole second's wait: views 1.6 s old. Rounds now start every second."""
    from dockyard.compute.monitor import MONITOR_SECONDS, LimitMonitor

    now = [0.0]
    starts: list[float] = []
    durations = iter([0.6, 0.6, 2.5, 0.1, 0.1, 0.1])

    class Stop:
        def wait(self, timeout: float) -> bool:
            now[0] += timeout
            return len(starts) == 6

    def running() -> list[object]:
        starts.append(now[0])
        now[0] += next(durations)
        return []

    monitor = LimitMonitor.__new__(LimitMonitor)  # run() uses none of its parts here
    monitor.run(Stop(), running, clock=lambda: now[0])  # type: ignore[arg-type]
    assert MONITOR_SECONDS == 1.0
    # 1, 2, 3 on the beat; the 2.5 s round ends at 5.5: the next at once, then on a
    # fresh beat one second later, with no rounds squeezed in to catch up
    assert starts == pytest.approx([1.0, 2.0, 3.0, 5.5, 6.5, 7.5])
