"""Accuracy of the /proc view and the container tools, side by side with lxcfs.

One container: 512 MB limit, 2 pinned cores, 200 MB resident and one busy
loop. The host's cgroup files are the truth for memory; for the load average
the truth is the reference (floating point) algorithm fed the samples the
agent took (it logs them at /run/dockyard/loadavg-samples). The same stock
tools (procps free, top, uptime; coreutils nproc) then run over lxcfs's files
on the same container. Targets: within 2 % on memory, 0.1 on load averages.
"""

from __future__ import annotations

import math
import re
import time

import pytest

from dockyard import cgroups
from dockyard.lab.daemons import agent_views
from tests.integration.lxcfs import lxcfs, run_under_lxcfs

pytestmark = [pytest.mark.root, pytest.mark.slow]

MiB = 2**20
TOOLS = (
    "echo '== free'; /usr/bin/free -b; echo '== top'; /usr/bin/top -b -n 1 | head -5; "
    "echo '== uptime'; /usr/bin/uptime; echo '== nproc'; nproc; "
    "echo '== cpuinfo'; grep -c ^processor /proc/cpuinfo; "
    "echo '== proc-uptime'; cat /proc/uptime; echo '== loadavg'; cat /proc/loadavg"
)


def reference(samples: list[int]) -> tuple[float, float, float]:
    """The kernel's load average in floating point, fed the same samples."""
    out = []
    for minutes in (1, 5, 15):
        e, load = math.exp(-5 / (60 * minutes)), 0.0
        for n in samples:
            load = load * e + n * (1 - e)
        out.append(load)
    return out[0], out[1], out[2]


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^== (\S+)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def figures(text: str) -> dict[str, float]:
    s = sections(text)
    mem = s["free"].splitlines()[1].split()
    top_mem = re.search(r"MiB Mem :\s+([\d.]+) total,\s+([\d.]+) free,\s+([\d.]+) used", s["top"])
    assert top_mem, s["top"]
    load = re.search(r"load average: ([\d.]+), ([\d.]+), ([\d.]+)", s["uptime"])
    assert load, s["uptime"]
    return {
        "free total MiB": int(mem[1]) / MiB,
        "free used MiB": int(mem[2]) / MiB,
        "top total MiB": float(top_mem[1]),
        "top used MiB": float(top_mem[3]),
        "uptime load1": float(load[1]),
        "uptime load5": float(load[2]),
        "uptime load15": float(load[3]),
        "nproc": int(s["nproc"]),
        "cpuinfo processors": int(s["cpuinfo"]),
        "uptime s": float(s["proc-uptime"].split()[0]),
    }


def test_tools_agree_with_the_cgroup_and_the_reference_load(cluster, machine_image):
    with lxcfs(cluster.root) as (mnt, _):
        dedicated = ("--cpu-policy", "dedicated")
        cluster.cli("flavor", "create", "acc", "--vcpus", "2", "--memory", "512", *dedicated)
        lxcfs_volume = ("--volume", f"{mnt}:/lxcfs:ro", "--timeout", "180")
        s = cluster.create("acc", *lxcfs_volume, flavor="acc", image=machine_image)
        ctr = cluster.container(s["id"])
        ctr.exec_run("cat /lxcfs/proc/loadavg")  # lxcfs tracks a cgroup's load from its first read
        # the load of known size: one busy loop and 200 MB resident
        ctr.exec_run(["python3", "-c", "while True: pass"], detach=True)
        ctr.exec_run(
            ["python3", "-c", "import time; b = b'x' * (200 << 20); time.sleep(3600)"], detach=True
        )
        load_started = time.time()
        time.sleep(45)

        tools_started = time.time()
        dockyard_out = ctr.exec_run(["sh", "-c", TOOLS]).output.decode()
        tools_ended = time.time()
        lxcfs_out = run_under_lxcfs(ctr.attrs["State"]["Pid"], TOOLS)
        cg = cgroups.of_pid(ctr.attrs["State"]["Pid"])
        usage = cgroups.memory(cg).usage
        working_set = usage - cgroups.memory_stat(cg)["total_inactive_file"]
        started = ctr.attrs["State"]["StartedAt"]
        age = time.time() - _epoch(started)
        view = agent_views(cluster.root / "agent") / s["id"]
        log = [ln.split() for ln in (view / "loadavg-samples").read_text().splitlines()]
        under_load = [int(n) for at, n in log if float(at) > load_started + 1]
        # the tools read the view as of the last sample before them; a sample taken while
        # they ran (5 s apart, and they count as running tasks) may or may not be in it
        before = reference([int(n) for at, n in log if float(at) <= tools_started])
        during = reference([int(n) for at, n in log if float(at) <= tools_ended])
        ref = during

    ours, theirs = figures(dockyard_out), figures(lxcfs_out)
    truth = {
        "free total MiB": 512.0,
        "free used MiB": working_set / MiB,
        "top total MiB": 512.0,
        "top used MiB": working_set / MiB,
        "uptime load1": ref[0],
        "uptime load5": ref[1],
        "uptime load15": ref[2],
        "nproc": 2,
        "cpuinfo processors": 2,
        "uptime s": age,
    }
    print(f"\n{'check':<20}{'host truth':>12}{'dockyard':>12}{'lxcfs':>12}")
    for k, v in truth.items():
        print(f"{k:<20}{v:>12.2f}{ours[k]:>12.2f}{theirs[k]:>12.2f}")
    print(f"agent samples under load: {under_load}")

    assert len(under_load) >= 7 and all(n >= 1 for n in under_load)  # the busy loop counted
    for k in ("free used MiB", "top used MiB"):
        assert abs(ours[k] - truth[k]) <= 0.02 * truth[k], k
    for k in ("free total MiB", "top total MiB", "nproc", "cpuinfo processors"):
        assert ours[k] == truth[k], k
    for i, k in enumerate(("uptime load1", "uptime load5", "uptime load15")):
        assert min(abs(ours[k] - before[i]), abs(ours[k] - during[i])) <= 0.1, k
    assert abs(ours["uptime s"] - age) <= 2
    assert truth["uptime load1"] > 0.4  # the load was seen at all
    cluster.cli("server", "delete", "acc", "--wait")


def _epoch(started_at: str) -> float:
    from dockyard.compute.procfs import epoch as parse

    return parse(started_at)
