"""The /proc view's pure parts: the kernel's load average, and the renderers."""

import math

from hypothesis import given
from hypothesis import strategies as st

from dockyard.procview import render
from dockyard.procview.loadavg import FIXED_1, LoadAvg

HOST_MEMINFO = """MemTotal:       24683656 kB
MemFree:        23665768 kB
MemAvailable:   24129428 kB
Buffers:           12756 kB
Cached:           665908 kB
SwapCached:            0 kB
Active(file):     100000 kB
Inactive(file):   200000 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Shmem:             52684 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""


def test_meminfo_is_the_containers():
    m = render.MemoryFigures(
        limit=512 * 2**20,
        usage=200 * 2**20,
        cache=100 * 2**20,
        inactive_file=60 * 2**20,
        shmem=10 * 2**20,
    )
    text = render.meminfo(m, HOST_MEMINFO)
    values = {ln.split(":")[0]: ln.split(":")[1].split()[0] for ln in text.splitlines()}
    assert values["MemTotal"] == str(512 * 1024)
    assert values["MemFree"] == str(312 * 1024)
    assert values["MemAvailable"] == str((512 - 140) * 1024)  # limit - working set
    assert values["Cached"] == str(90 * 1024) and values["Buffers"] == "0"
    assert values["HugePages_Total"] == "0"  # lines without kB are kept as they are


def test_cpu_lists():
    assert render.compress([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert render.cpus_online([3]) == "3\n"
    host = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: Y\n"
    view = render.cpuinfo(host, [1])
    assert "processor\t: 0\nmodel name\t: Y" in view and "X" not in view


def test_stat_counts_the_containers_cpu_time():
    text = render.stat(
        "cpu  1 2 3 4\ncpu0 1 2 3 4\nctxt 99\n", [2 * 10**9, 5 * 10**9], [1], uptime_s=10
    )
    lines = text.splitlines()
    assert lines[0] == "cpu  500 0 0 500 0 0 0 0 0 0"
    assert lines[1] == "cpu0 500 0 0 500 0 0 0 0 0 0" and lines[2] == "ctxt 99"


def reference(samples, minutes):
    """The textbook float formula the kernel approximates."""
    e = math.exp(-5 / (60 * minutes))
    load = 0.0
    for n in samples:
        load = load * e + n * (1 - e)
    return load


@given(st.lists(st.integers(0, 64), min_size=1, max_size=400))
def test_fixed_point_tracks_the_reference_within_a_tenth(samples):
    avg = LoadAvg()
    for n in samples:
        avg.sample(n)
    for got, minutes in zip(avg.values(), (1, 5, 15), strict=True):
        # the kernel's 11-bit constants (EXP_15 = 2037/2048 against e^-1/180) weigh
        # recent samples slightly differently: the gap grows with the load's size
        # (0.22 at a load of 60, found by Hypothesis)
        assert abs(got - reference(samples, minutes)) <= 0.1 + 0.005 * max(samples)


def test_steady_load_converges_and_renders_like_the_kernel():
    avg = LoadAvg()
    for _ in range(720):  # an hour of 5 s samples at 2 runnable tasks
        avg.sample(2)
    one, five, fifteen = avg.values()
    assert abs(one - 2) < 0.01 and abs(five - 2) < 0.01 and abs(fifteen - 2) < 0.05
    assert avg.render(2, 10, 1234).startswith("2.00 2.00 ")
    assert avg.loads[0] <= 2 * FIXED_1 + FIXED_1
