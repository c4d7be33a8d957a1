"""The agent's /metrics from sampled figures: every name of monitor/README.md, promtool-clean,
and a scrape that reads no cgroup file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dockyard.cgroups import DeviceIo
from dockyard.compute.driver import Observed
from dockyard.compute.drivers.fake import FakeDriver
from dockyard.compute.exporter import Exporter, TokenCheck
from dockyard.compute.metrics import Figures, ProcessState, Sampler, parse_net_dev
from dockyard.compute.monitor import FakeMeter
from dockyard.compute.supervisor import FakeProcesses
from dockyard.monitor.kmsg import CLASSES
from tests.unit.fakehost import instance

# monitor/README.md's agent tables, spelled out (dockyard_instance_drift is item 6's)
AGENT_NAMES = """
dockyard_instance_cpu_seconds_total
dockyard_instance_cpu_periods_total
dockyard_instance_cpu_throttled_periods_total
dockyard_instance_cpu_throttled_seconds_total
dockyard_instance_cpu_limit_cores
dockyard_instance_memory_working_set_bytes
dockyard_instance_memory_usage_bytes
dockyard_instance_memory_limit_bytes
dockyard_instance_memory_cache_bytes
dockyard_instance_memory_rss_bytes
dockyard_instance_memory_swap_bytes
dockyard_instance_oom_kills_total
dockyard_instance_pids
dockyard_instance_pids_limit
dockyard_instance_pids_refused_total
dockyard_instance_disk_read_bytes_total
dockyard_instance_disk_written_bytes_total
dockyard_instance_disk_reads_total
dockyard_instance_disk_writes_total
dockyard_instance_network_receive_bytes_total
dockyard_instance_network_receive_packets_total
dockyard_instance_network_receive_drops_total
dockyard_instance_network_receive_errors_total
dockyard_instance_network_transmit_bytes_total
dockyard_instance_network_transmit_packets_total
dockyard_instance_network_transmit_drops_total
dockyard_instance_network_transmit_errors_total
dockyard_instance_load1
dockyard_instance_load5
dockyard_instance_load15
dockyard_instance_uptime_seconds
dockyard_instance_running
dockyard_instance_should_run
dockyard_instance_process_up
dockyard_instance_process_restarts_total
dockyard_host_vcpus
dockyard_host_vcpus_allocated
dockyard_host_cores
dockyard_host_cores_allocated
dockyard_host_memory_bytes
dockyard_host_memory_allocated_bytes
dockyard_host_disk_bytes
dockyard_host_disk_allocated_bytes
dockyard_host_tasks
dockyard_host_pid_max
dockyard_host_conntrack_entries
dockyard_host_conntrack_max
dockyard_host_kernel_events_total
dockyard_dockerd_up
dockyard_dockerd_info
dockyard_agent_info
""".split()

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
dy{key}:  5000      50    1    2    0     0          0         0     7000      70    3    4    0     0       0          0
"""  # noqa: E501


class Meter(FakeMeter):
    """A FakeMeter that counts reads: a scrape must not read any."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def figures(self, instance_id: str, pid: int) -> Figures:
        self.reads += 1
        return super().figures(instance_id, pid)


def _proc(tmp_path: Path, key: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/net/netfilter").mkdir(parents=True)
    (proc / "net/dev").write_text(NET_DEV.format(key=key))
    (proc / "loadavg").write_text("0.50 0.40 0.30 2/345 6789\n")
    (proc / "sys/kernel/pid_max").write_text("4194304\n")
    (proc / "sys/net/netfilter/nf_conntrack_count").write_text("12\n")
    (proc / "sys/net/netfilter/nf_conntrack_max").write_text("262144\n")
    return proc


@pytest.fixture
def sampled(tmp_path):
    iid = "0a1b2c3d-0000-4000-8000-000000000001"
    stopped = "0a1b2c3d-0000-4000-8000-000000000002"
    meter, processes = Meter(), FakeProcesses()
    meter.figured[iid] = Figures(
        cpu_user=1.5, cpu_system=0.5, periods=10, throttled_periods=2, throttled_seconds=0.1,
        cpu_limit_cores=1.0, memory_usage=64 << 20, memory_limit=128 << 20,
        memory_working_set=60 << 20, memory_cache=4 << 20, memory_rss=50 << 20, oom_kills=1,
        pids=7, pids_limit=100, pids_refused=3, disks=(DeviceIo("8:0", 4096, 8192, 1, 2),),
    )  # fmt: skip
    processes.states[iid] = {"sshd": ProcessState(True, 0), "web": ProcessState(False, 2)}
    views = tmp_path / "instances"
    (views / iid / "proc").mkdir(parents=True)
    (views / iid / "proc" / "loadavg").write_text("1.00 0.50 0.25 1/10 99\n")
    key = iid.replace("-", "")[:11]
    proc = _proc(tmp_path, key)
    sampler = Sampler(FakeDriver(), meter, processes, lambda i: views / i, proc=proc)
    desired = {
        iid: instance(iid).model_copy(update={"project": "shop"}),
        stopped: instance(stopped, power="stopped", last_octet=6),
    }
    sampler.sample(desired, [Observed(iid, True, 4242, "2026-01-01T00:00:00.123456789Z")])
    return sampler, meter, iid, stopped


def _scrape(sampler: Sampler) -> str:
    kernel = {c: 0 for c in CLASSES} | {"oom_kill": 2}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Exporter("h1", "az1", lambda: sampler.latest, lambda: kernel))
    return generate_latest(registry).decode()


def test_every_agent_name_of_the_readme_is_served(sampled):
    sampler, _, iid, stopped = sampled
    body = _scrape(sampler)
    names = {s.name for f in text_string_to_metric_families(body) for s in f.samples}
    missing = [n for n in AGENT_NAMES if n not in names]
    assert not missing, f"not served: {missing}"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
    }
    inst = {"instance_id": iid, "name": "vm5", "project": "shop", "host": "h1", "az": "az1"}

    def value(name: str, **extra: str) -> float:
        return samples[(name, tuple(sorted({**inst, **extra}.items())))]

    assert value("dockyard_instance_network_receive_bytes_total") == 7000  # host end's tx
    assert value("dockyard_instance_network_transmit_drops_total") == 2  # host end's rx drops
    assert value("dockyard_instance_process_up", process="web") == 0
    assert value("dockyard_instance_process_restarts_total", process="web") == 2
    assert value("dockyard_instance_load1") == 1.0
    assert value("dockyard_instance_disk_written_bytes_total", device="8:0") == 8192
    off = {**inst, "instance_id": stopped, "name": "vm6", "project": ""}
    assert samples[("dockyard_instance_should_run", tuple(sorted(off.items())))] == 0
    assert samples[("dockyard_instance_running", tuple(sorted(off.items())))] == 0
    host = (("az", "az1"), ("host", "h1"))
    assert samples[("dockyard_host_tasks", host)] == 345
    assert (
        samples[
            (
                "dockyard_host_kernel_events_total",
                (("az", "az1"), ("class", "oom_kill"), ("host", "h1")),
            )
        ]
        == 2
    )
    assert samples[("dockyard_host_vcpus_allocated", host)] == 2  # the stopped one counts too


def test_a_scrape_reads_no_cgroup_file(sampled):
    sampler, meter, _, _ = sampled
    before = meter.reads
    for _ in range(20):
        _scrape(sampler)
    assert meter.reads == before


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (prometheus)")
def test_promtool_accepts_the_exposition(sampled):
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=_scrape(sampled[0]), capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_scrape_tokens_are_checked_by_their_hash():
    import hashlib

    check = TokenCheck([hashlib.sha256(b"dy_good").hexdigest()])
    assert check.allows("Bearer dy_good")
    assert check.allows("bearer dy_good ")
    assert not check.allows("Bearer dy_bad")
    assert not check.allows("dy_good")
    assert not check.allows("")
    assert not TokenCheck().allows("Bearer dy_good")  # nothing known yet: nothing passes


def test_net_dev_is_parsed_per_interface():
    got = parse_net_dev(NET_DEV.format(key="abc"))
    assert got["dyabc"]["rx_bytes"] == 5000 and got["dyabc"]["tx_drops"] == 4
    assert got["lo"]["tx_packets"] == 10
