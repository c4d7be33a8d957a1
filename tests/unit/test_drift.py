"""Consistency checks, pure: what should be (declared, required, majority, ties), what
differs on a host and in a container, and the samples exported for the drift alert."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, generate_latest

from dockyard import model
from dockyard.compute.drift import DRIFT_ROUNDS, HostSurvey
from dockyard.errors import PermanentError
from dockyard.model import HostCheck, InstanceDrift, Limits, TaskState, VolumeAttachment
from dockyard.monitor.drift import (
    INSTANCE_HELP,
    INSTANCE_METRIC,
    InstanceSeen,
    expected,
    host_drift,
    host_drift_samples,
    instance_drift,
    instance_drift_samples,
    majority,
    shares_to_weight,
)
from dockyard.monitor.samples import SampleCollector
from dockyard.network.plumbing import _local_ips, bridge_state
from tests.unit.fakehost import FakeHost, instance, new_id

PID_MAX = "sysctl.kernel.pid_max"


def _drift_of(baselines, declared=None):
    want = expected(baselines, declared or {})
    return {host: host_drift(b, want) for host, b in baselines.items()}


# --- hosts


def test_the_odd_host_out_drifts_from_the_majority():
    baselines = {
        "h1": {PID_MAX: "4194304", "kernel.release": "6.1"},
        "h2": {PID_MAX: "4194304", "kernel.release": "6.1"},
        "h3": {PID_MAX: "32768", "kernel.release": "6.1"},
    }
    found = _drift_of(baselines)
    assert found["h1"] == ([], []) and found["h2"] == ([], [])
    [d], undecided = found["h3"]
    assert (d.item, d.value, d.expected) == (PID_MAX, "32768", "4194304")
    assert d.source == "majority of 3 hosts (2 agree)" and undecided == []


def test_a_declared_value_wins_over_the_majority():
    baselines = {h: {PID_MAX: "32768"} for h in ("h1", "h2")} | {"h3": {PID_MAX: "4194304"}}
    found = _drift_of(baselines, {PID_MAX: "4194304"})
    for host in ("h1", "h2"):
        [d] = found[host][0]
        assert (d.value, d.expected, d.source) == ("32768", "4194304", "declared")
    assert found["h3"] == ([], [])


def test_a_tie_decides_nothing_and_says_so():
    baselines = {"h1": {PID_MAX: "32768"}, "h2": {PID_MAX: "4194304"}}
    found = _drift_of(baselines)
    assert found["h1"] == ([], [PID_MAX]) and found["h2"] == ([], [PID_MAX])
    assert majority(["a", "b", "a", "b", "c"]) == (None, 2)
    assert majority(["a", "b", "a"]) == ("a", 2)
    # a declared value settles the tie
    found = _drift_of(baselines, {PID_MAX: "4194304"})
    assert [d.value for d in found["h1"][0]] == ["32768"] and found["h2"] == ([], [])


def test_one_host_alone_is_its_own_majority_but_not_its_declared_baseline():
    assert _drift_of({"h1": {PID_MAX: "32768"}}) == {"h1": ([], [])}
    [d] = _drift_of({"h1": {PID_MAX: "32768"}}, {PID_MAX: "65536"})["h1"][0]
    assert (d.value, d.expected) == ("32768", "65536")


def test_a_declared_item_the_host_does_not_report_drifts_and_an_unshared_one_does_not():
    baselines = {"h1": {"network.br-a.bridge": "up"}, "h2": {}}
    found = _drift_of(baselines, {"dockerd.live_restore": "true"})
    assert [(d.item, d.value) for d in found["h2"][0]] == [
        ("dockerd.live_restore", "(not reported)")
    ]
    assert [d.item for d in found["h1"][0]] == ["dockerd.live_restore"]


def test_network_bridges_must_be_up_and_uplinks_enslaved_whatever_the_majority():
    down = {"network.br-a.bridge": "down", "network.br-a.uplink": "not enslaved"}
    found = _drift_of({"h1": down, "h2": dict(down)})
    assert {(d.item, d.expected, d.source) for d in found["h1"][0]} == {
        ("network.br-a.bridge", "up", "required"),
        ("network.br-a.uplink", "enslaved", "required"),
    }


def test_host_drift_samples_carry_host_az_item():
    checks = [
        HostCheck(
            host="h3",
            availability_zone="az1",
            state="up",
            drift=_drift_of({"h1": {PID_MAX: "1"}, "h2": {PID_MAX: "1"}, "h3": {PID_MAX: "2"}})[
                "h3"
            ][0],
        ),
        HostCheck(host="h1", availability_zone="az1", state="up", drift=[]),
    ]
    [s] = host_drift_samples(checks)
    assert (s.name, s.labels, s.value) == (
        "dockyard_host_drift",
        {"host": "h3", "az": "az1", "item": PID_MAX},
        1.0,
    )


# --- the agent's survey of its host


def test_the_survey_reads_sysctls_and_says_absent_for_unloaded_modules(tmp_path):
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/pid_max").write_text("4194304\n")
    (proc / "sys/kernel/osrelease").write_text("6.1.0-test\n")
    (sys / "fs/cgroup").mkdir(parents=True)
    (sys / "fs/cgroup/cgroup.controllers").write_text("cpu memory\n")
    items = HostSurvey(proc, sys).items()
    assert items == {
        "kernel.release": "6.1.0-test",
        "cgroup.version": "2",
        "module.br_netfilter": "absent",
        "sysctl.kernel.pid_max": "4194304",
        "sysctl.net.netfilter.nf_conntrack_max": "absent",
        "sysctl.net.bridge.bridge-nf-call-iptables": "absent",
    }


def test_bridge_state_from_sysfs(tmp_path):
    net = tmp_path / "net"
    (net / "br-a").mkdir(parents=True)
    (net / "br-a/flags").write_text("0x1003\n")
    (net / "eth9").mkdir()
    assert bridge_state("br-a", "eth9", net) == {
        "network.br-a.bridge": "up",
        "network.br-a.uplink": "not enslaved",
    }
    (net / "eth9/master").symlink_to(net / "br-a")
    assert bridge_state("br-a", "eth9", net)["network.br-a.uplink"] == "enslaved"
    assert bridge_state("br-b", "eth8", net) == {
        "network.br-b.bridge": "absent",
        "network.br-b.uplink": "absent",
    }


def test_local_ips_from_a_netns_fib_trie():
    fib = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 198.18.0.0/24 2 0 2
        |-- 198.18.0.0
           /24 link UNICAST
        |-- 198.18.0.5
           /32 host LOCAL
Local:
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.1
        /32 host LOCAL
  |-- 198.18.0.5
     /32 host LOCAL
"""
    assert _local_ips(fib) == ("198.18.0.5",)


# --- instances


def _seen(want, **kw):
    """What a container matching ``want`` shows (cgroup v1)."""
    base = InstanceSeen(
        cgroup_version=1,
        memory_bytes=want.memory_mb * 2**20,
        cpu_weight=1024 * want.vcpus,
        cpu_cap=0.0,
        cpuset="0-3",
        pids_limit=want.pids_limit,
        mounts=tuple((v.path, v.read_only) for v in want.volumes),
        port_bridge=want.net.bridge,
        mac=want.net.mac.upper(),
        ips=(want.net.ip,),
    )
    return dataclasses.replace(base, **kw)


def test_a_container_as_specified_has_no_drift():
    want = instance(new_id(), volumes=[VolumeAttachment(path="/data", host_path="/srv/x")])
    want = want.model_copy(update={"cpuset": [0, 1, 2, 3]})
    assert instance_drift(want, _seen(want)) == []


def test_each_limit_changed_behind_dockyards_back_is_named():
    want = instance(new_id(), limits=Limits(cpu_cap=0.5)).model_copy(update={"cpuset": [0, 1]})
    seen = _seen(
        want,
        memory_bytes=128 * 2**20,
        cpu_weight=512,
        cpu_cap=2.0,
        cpuset="0-3",
        pids_limit=-1,
    )
    found = {d.item: (d.value, d.expected) for d in instance_drift(want, seen)}
    assert found == {
        "memory": (str(128 * 2**20), str(64 * 2**20)),
        "cpu_shares": ("512", "1024"),
        "cpu_quota": ("2", "0.5"),
        "cpuset": ("0-3", "0,1"),
        "pids": ("-1", "100"),
    }


def test_cgroup_v2_compares_cpu_weight():
    want = instance(new_id())
    seen = _seen(want, cgroup_version=2, cpu_weight=shares_to_weight(1024))
    assert instance_drift(want, seen) == []
    assert shares_to_weight(1024) == 39  # what runc writes for 1024 shares


def test_an_unexpected_mount_a_missing_one_and_a_port_off_its_bridge_are_drift():
    want = instance(new_id(), volumes=[VolumeAttachment(path="/data", host_path="/srv/x")])
    seen = _seen(
        want,
        mounts=(("/mnt/host", False),),
        port_bridge="",
        mac="02:00:00:00:00:99",
        ips=("198.18.0.99",),
    )
    found = {d.item: (d.value, d.expected) for d in instance_drift(want, seen)}
    assert found == {
        "mounts": ("/mnt/host", "/data"),
        "port": ("(no port)", "dyt-unit"),
        "mac": ("02:00:00:00:00:99", want.net.mac),
        "ip": ("198.18.0.99", want.net.ip),
    }


def test_what_was_not_read_is_not_judged():
    assert instance_drift(instance(new_id()), InstanceSeen()) == []


def test_instance_drift_samples_carry_every_label():
    [s] = instance_drift_samples(
        "h1",
        "az1",
        [
            InstanceDrift(
                instance_id="i-1",
                name="web1",
                items=instance_drift(instance("i-1"), _seen(instance("i-1"), pids_limit=5)),
            )
        ],
        projects={"i-1": "shop"},
    )
    assert s.name == "dockyard_instance_drift" and s.value == 1.0
    assert s.labels == {
        "instance_id": "i-1",
        "name": "web1",
        "project": "shop",
        "host": "h1",
        "az": "az1",
        "item": "pids",
    }


# --- the agent


def _running(tmp_path):
    host = FakeHost(tmp_path)
    iid = new_id()
    host.server.publish(instance(iid, task=None))
    agent = host.agent()
    agent.receive(host.server.state)
    agent.reconcile_once()
    agent.reconcile_once()  # the start event's pass: it sees the container running
    return host, agent, iid


def _rounds(agent, n):
    for _ in range(n * DRIFT_ROUNDS):
        agent.after_monitor_round(agent.running())


def test_the_agent_reports_drift_seen_on_two_checks_in_a_row(tmp_path):
    host, agent, iid = _running(tmp_path)
    want = agent.snapshot()[0][iid]
    host.meter.enforced[iid] = _seen(want, memory_bytes=32 * 2**20)

    _rounds(agent, 1)
    assert agent.status().instance_drift == []  # once may be a step on its way
    _rounds(agent, 1)
    [found] = agent.status().instance_drift
    assert found.instance_id == iid and [d.item for d in found.items] == ["memory"]
    text = _exposition(agent)
    labels = f'instance_id="{iid}",item="memory",name="{want.name}",project=""'
    assert f'dockyard_instance_drift{{az="nova",host="h1",{labels}}} 1.0' in text

    host.meter.enforced[iid] = _seen(want)  # put back
    _rounds(agent, 1)
    assert agent.status().instance_drift == []
    assert "dockyard_instance_drift{" not in _exposition(agent)


def _exposition(agent):
    """What the agent's /metrics would serve of its drift (compute/cli.py wires it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SampleCollector(agent.drift_samples, {INSTANCE_METRIC: INSTANCE_HELP}))
    return generate_latest(registry).decode()


def test_an_instance_with_a_task_on_its_way_is_not_judged(tmp_path):
    host, agent, iid = _running(tmp_path)
    host.server.publish(instance(iid, task=TaskState.resizing, memory_mb=128))
    agent.receive(host.server.state)
    want = agent.snapshot()[0][iid]
    host.meter.enforced[iid] = _seen(want, memory_bytes=64 * 2**20)
    _rounds(agent, 2)
    assert agent.status().instance_drift == []


def test_the_heartbeat_carries_the_hosts_baseline(tmp_path):
    host, agent, _ = _running(tmp_path)
    agent.heartbeat()
    status = host.server.statuses[-1]
    assert status.baseline is not None
    assert status.baseline["dockerd.live_restore"] == "true"
    assert status.baseline["network.dyt-unit.bridge"] == "up"
    assert status.baseline["agent.version"]
    assert status.baseline["sysctl.kernel.pid_max"].isdigit()  # this machine's, read


def test_a_baseline_the_server_refuses_does_not_make_the_host_look_down(tmp_path):
    host, agent, _ = _running(tmp_path)
    beats = []

    def refusing(status=None):
        if status is not None:
            raise PermanentError("server refused: baseline: bad key", status=422)
        beats.append("bare")
        return model.Beat(generation=0)

    host.server.heartbeat = refusing
    agent.heartbeat()
    assert beats == ["bare"]


def test_a_survey_that_breaks_does_not_stop_the_heartbeat(tmp_path):
    """A bug or a host too odd for the status model (say, 300 bridges) must not
    silence the agent: a silent host is called down and may be evacuated."""
    host, agent, _ = _running(tmp_path)
    sent = []
    host.server.heartbeat = lambda status=None: sent.append(status) or model.Beat(generation=0)

    def broken():
        raise ValueError("more than 256 baseline items")

    agent.status = broken
    agent.heartbeat()
    assert sent == [None]  # beat without its status


def test_a_survey_that_hangs_does_not_delay_the_heartbeat(tmp_path, monkeypatch):
    """A wedged dockerd holds the survey's info call for 120 s: the agent beats without
    the host's status after SURVEY_WAIT, so a live host is not called down (and
    evacuated while its containers run); the hung survey is not started twice."""
    import threading
    import time

    from dockyard.compute import agent as agent_module

    monkeypatch.setattr(agent_module, "SURVEY_WAIT", 0.1)
    host, agent, _ = _running(tmp_path)
    sent = []
    host.server.heartbeat = lambda status=None: sent.append(status) or model.Beat(generation=0)
    release, surveys = threading.Event(), []

    def hung():
        surveys.append(1)
        release.wait(10)
        raise TimeoutError("dockerd did not answer")

    agent.status = hung
    started = time.monotonic()
    agent.heartbeat()
    agent.heartbeat()
    assert time.monotonic() - started < 5 and sent == [None, None]  # not the 10 s hang
    assert surveys == [1]  # the second beat found the first survey still running
    release.set()
