"""The container tools on recorded trees: a v1 container's view of its own
cgroup (Docker mounts the container's directory at each controller's root),
the agent's view directory, /proc and utmp."""

from __future__ import annotations

import os
import struct

import pytest

from dockyard import cgroups
from dockyard.compute import procfs
from dockyard.procview import render
from dockyard.tools import df, free, top, uptime
from dockyard.tools.sources import Container, users

MiB = 2**20
HZ = os.sysconf("SC_CLK_TCK")
INSIDE_V1 = {
    "memory": {
        "memory.usage_in_bytes": f"{300 * MiB}\n",
        "memory.limit_in_bytes": f"{512 * MiB}\n",
        "memory.memsw.limit_in_bytes": f"{640 * MiB}\n",
        "memory.oom_control": "oom_kill 0\n",
        "memory.stat": f"cache {100 * MiB}\nrss {200 * MiB}\nshmem {10 * MiB}\n"
        f"inactive_file {60 * MiB}\nswap {MiB}\n",
    },
    "cpu": {
        "cpu.stat": "nr_throttled 0\n",
        "cpu.cfs_quota_us": "150000\n",
        "cpu.cfs_period_us": "100000\n",
    },  # fmt: skip
    "cpuacct": {"cpuacct.usage": "0\n", "cpuacct.stat": f"user {3 * HZ}\nsystem {HZ}\n"},
    "cpuset": {"cpuset.cpus": "0-3\n"},
    "blkio": {
        "blkio.throttle.io_service_bytes": "8:0 Read 4096\n8:0 Write 1048576\nTotal 1052672\n",
        "blkio.throttle.io_serviced": "8:0 Read 1\n8:0 Write 16\nTotal 17\n",
    },
}


@pytest.fixture
def inside(tmp_path) -> Container:
    """A container's filesystem as its tools see it."""
    fs, proc, view = tmp_path / "cgroup", tmp_path / "proc", tmp_path / "run-dockyard"
    for controller, files in INSIDE_V1.items():
        (fs / controller).mkdir(parents=True)
        for name, text in files.items():
            (fs / controller / name).write_text(text)
    lines = [f"{n}:{c}:/docker/abc" for n, c in enumerate(INSIDE_V1, 1)]
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("\n".join(lines) + "\n0::/\n")
    (proc / "1").mkdir()
    boot = 1000.0  # the container's PID 1 started 1000 s after the host booted
    (proc / "1" / "stat").write_text("1 (supervisord) S " + "0 " * 18 + f"{int(boot * HZ)} 0\n")
    (proc / "loadavg").write_text("9.00 9.00 9.00 1/900 4242\n")  # the host's
    view.mkdir()
    (view / "loadavg").write_text("0.52 0.31 0.10 2/17 321\n")
    (view / "disk").write_text(f"{10 * 2**30} {64 * MiB}\n")
    return Container(proc, fs, view)


def test_own_cgroup_is_the_mount_root_inside_a_container(inside, tmp_path):
    assert inside.cg.dirs["memory"] == tmp_path / "cgroup" / "memory"


def test_own_cgroup_v2_namespace(tmp_path):
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text("0::/\n")
    (tmp_path / "fs").mkdir()
    cg = cgroups.own(tmp_path / "proc", tmp_path / "fs")
    assert cg.version == 2 and cg.dirs[""] == tmp_path / "fs"


def test_free_shows_the_limit_and_the_working_set(inside):
    m = inside.memory()
    assert m.total == 512 * MiB and m.swap_total == 128 * MiB and m.swap_used == MiB
    assert m.available == (512 - (300 - 60)) * MiB
    assert m.used == (300 - 60) * MiB  # total - available, as procps 4
    assert m.free == 212 * MiB and m.cache == 100 * MiB and m.shared == 10 * MiB
    lines = free.render(m, "m").splitlines()
    assert lines[0].split() == ["total", "used", "free", "shared", "buff/cache", "available"]
    assert lines[1].split() == ["Mem:", "512", "240", "212", "10", "100", "272"]
    assert lines[2].split() == ["Swap:", "128", "1", "127"]
    assert free.render(m, "h").splitlines()[1].split()[1] == "512.0Mi"


def test_cpus_are_the_cap_rounded_up_within_the_cpuset(inside):
    assert inside.cpus() == 2  # 1.5 cores of a 4-CPU cpuset
    assert inside.cpu_seconds() == (3.0, 1.0)


def test_load_comes_from_the_agent_and_says_when_it_does_not(inside, tmp_path):
    load = inside.load()
    assert (load.one, load.five, load.fifteen, load.running, load.total) == (0.52, 0.31, 0.1, 2, 17)
    assert load.from_agent
    (tmp_path / "run-dockyard" / "loadavg").unlink()
    assert not inside.load().from_agent and inside.load().one == 9.0


def test_uptime_formats():
    assert uptime.classic(4 * 60 + 59) == "up 4 min"
    assert uptime.classic(3 * 3600 + 4 * 60) == "up  3:04"
    assert uptime.classic(2 * 86400 + 3 * 3600 + 4 * 60) == "up 2 days,  3:04"
    assert uptime.pretty(86400 + 60) == "up 1 day, 1 minute"
    assert uptime.pretty(30) == "up 0 minutes"


def test_uptime_counts_from_the_containers_pid_1(inside, monkeypatch):
    monkeypatch.setattr("time.clock_gettime", lambda clock: 1300.5)
    assert inside.uptime() == pytest.approx(300.5, abs=1 / HZ)


def test_users_counts_user_processes_in_utmp(tmp_path):
    def record(kind: int) -> bytes:
        return struct.pack("<h", kind) + bytes(382)

    (tmp_path / "utmp").write_bytes(record(2) + record(7) + record(8) + record(7))
    assert users(tmp_path / "utmp") == 2
    assert users(tmp_path / "missing") == 0


def test_df_root_is_what_the_container_wrote(inside, tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "overlay / overlay rw,lowerdir=/a 0 0\nproc /proc proc rw 0 0\n"
        f"/dev/sda1 {tmp_path} ext4 rw 0 0\n/dev/sda1 /etc/hosts ext4 rw 0 0\n"
        f"/dev/sda1 {tmp_path / 'run-dockyard'} ext4 ro 0 0\n"  # a directory, like the real one
    )
    table = df.mounts(mounts, view=tmp_path / "run-dockyard")
    assert [t for _, t, _ in table] == ["/", str(tmp_path)]  # no pseudo fs, binds, view
    disk = df._disk(inside.disk())
    assert disk is not None and disk[:2] == (10 * 2**30, 64 * MiB)
    root = df.row("overlay", "/", disk)
    assert root.used == 64 * MiB and root.percent() == "1%"
    text = df.render([root], human_sizes=True)
    assert text.splitlines()[1].split()[:3] == ["overlay", "10.0G", "64.0M"]


def test_top_frame_from_two_samples(inside):
    before = top.Sample(0.0, (3.0, 1.0), {1: _proc(1, "supervisord", 100)})
    now = top.Sample(2.0, (4.0, 1.2), {1: _proc(1, "supervisord", 100), 7: _proc(7, "python3", HZ)})
    text = top.frame(inside, before, now)
    assert "MiB Mem :    512.0 total" in text and "(2 CPUs)" in text
    assert "%Cpu(s): 25.0 us,  5.0 sy" in text  # 1.2 s of 2 s on 2 CPUs
    rows = text.splitlines()[7:]
    assert rows[0].split()[-1] == "python3" and rows[0].split()[8] == "50.0"


def _proc(pid: int, command: str, ticks: int) -> top.Proc:
    return top.Proc(pid, "root", "S", 20, 0, 10 * MiB, 5 * MiB, MiB, ticks, command)


def test_diskstats_are_the_containers_io():
    host = (
        "   8       0 sda 9 9 9 9 9 9 9 9 0 9 9 0 0 0 0 0 0\n"
        "   8       1 sda1 1 1 1 1 1 1 1 1 0 1 1 0 0 0 0 0 0\n"
    )
    ios = [render.DiskIo("8:0", 4096, 1048576, 1, 16), render.DiskIo("253:9", 1, 1, 1, 1)]
    lines = render.diskstats(host, ios).splitlines()
    assert len(lines) == 1  # a device the host does not list is left out
    f = lines[0].split()
    assert f[:3] == ["8", "0", "sda"] and len(f) == 20
    assert (f[3], f[5], f[7], f[9]) == ("1", "8", "16", "2048")


def test_io_counters_v1_and_v2(inside, tmp_path):
    assert cgroups.io(inside.cg) == [cgroups.DeviceIo("8:0", 4096, 1048576, 1, 16)]
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "io.stat").write_text("8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0\n")
    v2 = cgroups.Cgroup(2, {"": tmp_path / "v2"})
    assert cgroups.io(v2) == [cgroups.DeviceIo("8:0", 10, 20, 1, 2)]


def test_view_cpus_and_time_under_a_cap():
    assert render.visible_cpus([0, 1, 2, 3], None) == [0, 1, 2, 3]
    assert render.visible_cpus([0, 1, 2, 3], 1.5) == [0, 1]
    assert render.visible_cpus([2, 3], 0.25) == [2]
    # time spent on CPUs not shown is not lost: it is spread over those shown
    assert procfs.spread([10, 20, 30, 40], [0, 1, 2, 3], [0, 1]) == [50, 50]


def test_du_counts_blocks_and_hard_links_once(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "d" / "a", tmp_path / "d" / "b")
    one = procfs.du(tmp_path / "d")
    assert 100_000 <= one < 100_000 + 3 * 4096 + 2 * 4096


def test_interactive_top_draws_frames_and_quits_on_q():
    """top on a terminal: a pseudo-terminal, this process's own (host) cgroup."""
    import pty
    import select
    import sys
    import time

    pid, fd = pty.fork()
    if pid == 0:  # child: the tool as the installed command runs it
        code = "import sys; from dockyard.tools.top import main; sys.exit(main())"
        os.execv(sys.executable, [sys.executable, "-c", code, "-d", "0.2"])
    seen, deadline = b"", time.monotonic() + 20
    while b"PID USER" not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            seen += os.read(fd, 65536)
    assert b"\x1b[H\x1b[2J" in seen and b"MiB Mem :" in seen and b"PID USER" in seen
    os.write(fd, b"q")
    for _ in range(100):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("top did not quit on q")
    assert os.waitstatus_to_exitcode(status) == 0
    os.close(fd)
