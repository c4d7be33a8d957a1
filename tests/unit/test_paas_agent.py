"""The agent's side of the PaaS on a host of fakes: env and config files, rebuilds
(planned when rebuild_seq differs, carried out keeping the identity, finished after a
crash), and health checks (the state machine, the checker's loop, the reports)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time

import pytest

from dockyard.compute.agent import Agent, AgentConfig
from dockyard.compute.driver import ExecResult, Observed
from dockyard.compute.health import HealthChecker, HealthState, Target
from dockyard.compute.reconcile import Step, plan
from dockyard.compute.store import Record
from dockyard.errors import PermanentError, TemporaryError
from dockyard.lab.procs import wait_for
from dockyard.model import (
    ConfigFile,
    Health,
    HealthCheck,
    PowerState,
    TaskState,
    VolumeAttachment,
)
from dockyard.network.plumbing import host_ifname
from tests.unit.fakehost import IMAGE, FakeHost, InlineExecutor, instance, new_id

NEW_IMAGE = "busybox:new"


@pytest.fixture
def host(tmp_path):
    h = FakeHost(tmp_path)
    h.driver.images.add(NEW_IMAGE)
    return h


def paas(iid, *, seq=0, image=IMAGE, check=None, power="running", task="", **kw):
    """task "": rebuilding while seq > 0 (what the server sends with a new rebuild_seq)."""
    if task == "":
        task = TaskState.rebuilding if seq else None
    want = instance(iid, task=task, power=power, power_state=PowerState.running, **kw)
    return want.model_copy(
        update={
            "image_ref": image,
            "env": {"APP_MODE": "blue"},
            "files": [ConfigFile(path="/etc/app/app.conf", content="port=80\n", mode=0o600)],
            "rebuild_seq": seq,
            "health_check": check,
        }
    )


def agent_of(host, prober) -> Agent:
    cfg = AgentConfig(server="http://fake", token="t", host="h1", state_dir=host.state_dir)
    return Agent(
        cfg,
        host.driver,
        host.server,
        plumber=host.plumber,
        views=host.views,
        meter=host.meter,
        volumes=host.volumes,
        transfer=host.transfer,
        pool=InlineExecutor(),
        clock=host.clock,
        prober=prober,
    )


def one_pass(host, want):
    """What a reconcile pass would do for this one instance."""
    worker = host.worker()
    p = plan({want.id: want}, {o.instance_id: o for o in host.driver.list()},
             worker.store.records(), host.plumber.links())  # fmt: skip
    step = p.steps.get(want.id)
    if step is not None:
        worker.run(step, want)
    return step


# --- env, files, rebuilds


def test_a_spawn_gives_the_container_its_env_and_files_before_it_starts(host):
    iid = new_id()
    host.worker().run(Step.spawn, paas(iid))
    c = host.driver.containers[iid]
    assert c.spec.env == {"APP_MODE": "blue"}
    conf = c.files["/etc/app/app.conf"]
    assert (conf.content, conf.mode) == (b"port=80\n", 0o600)
    calls = host.driver.calls
    assert calls.index("put_files") < calls.index("start")


def test_plan_rebuilds_a_container_made_for_another_rebuild_seq_running_or_stopped():
    iid = new_id()
    for power in ("running", "stopped"):
        want = paas(iid, seq=2, power=power)
        old = Observed(iid, running=True, pid=9, started_at="t1", rebuild_seq=1)
        assert plan({iid: want}, {iid: old}, {iid: Record(iid)}, set()).steps[iid] == Step.rebuild
        same = Observed(iid, running=power == "running", pid=9, started_at="t1", rebuild_seq=2)
        assert plan({iid: want}, {iid: same}, {}, set()).steps.get(iid) != Step.rebuild
    deleted = paas(iid, seq=2, power="deleted")
    old = Observed(iid, running=True, pid=9, started_at="t1", rebuild_seq=1)
    assert plan({iid: deleted}, {iid: old}, {}, set()).steps[iid] == Step.destroy


def test_a_rebuild_makes_a_new_container_from_the_new_image_keeping_the_identity(host):
    iid = new_id()
    host.worker().run(Step.spawn, paas(iid))
    before = host.driver.inspect(iid)

    want = paas(iid, seq=1, image=NEW_IMAGE)
    assert one_pass(host, want) == Step.rebuild

    after = host.driver.inspect(iid)
    c = host.driver.containers[iid]
    assert after.running and after.container_id != before.container_id
    assert after.rebuild_seq == 1 and c.spec.image_ref == NEW_IMAGE
    assert (c.spec.name, c.spec.hostname) == ("vm5", "vm5")
    assert "/etc/app/app.conf" in c.files  # the writable layer went; the files came again
    port = host.plumber.ports[host_ifname(iid)]
    assert (port.ip, port.mac) == ("198.18.0.5", "02:00:c6:12:00:05")
    assert host.server.reports_of(iid)[-1].rebuilt_seq == 1
    assert one_pass(host, want) == Step.report  # in sync: the task's report again at most
    assert one_pass(host, want.model_copy(update={"task_state": None})) is None


def test_a_pull_that_fails_leaves_the_old_container_running_and_is_reported_once(host):
    iid = new_id()
    host.worker().run(Step.spawn, paas(iid))
    before = host.driver.inspect(iid)
    want = paas(iid, seq=1, image="busybox:nowhere")  # not on the host, no source

    for _ in range(2):
        with pytest.raises(TemporaryError):
            host.worker().run(Step.rebuild, want)

    assert host.driver.inspect(iid) == before  # the same container, still running
    errors = [r for r in host.server.reports_of(iid) if r.error]
    assert len(errors) == 1 and "busybox:nowhere" in errors[0].error
    assert errors[0].rebuilt_seq == 0


@pytest.mark.parametrize("method", ["create", "put_files", "start"])
def test_an_agent_stopped_in_the_middle_of_a_rebuild_ends_rebuilt(host, method):
    iid = new_id()
    host.worker().run(Step.spawn, paas(iid))
    want = paas(iid, seq=1, image=NEW_IMAGE)
    host.driver.fail_next(method, TemporaryError("the agent was killed here"))
    with pytest.raises(TemporaryError):
        host.worker().run(Step.rebuild, want)

    while one_pass(host, want) not in (None, Step.report):  # the next passes, after a restart
        pass

    obs = host.driver.inspect(iid)
    c = host.driver.containers[iid]
    assert obs.running and obs.rebuild_seq == 1 and c.spec.image_ref == NEW_IMAGE
    assert "/etc/app/app.conf" in c.files
    assert host_ifname(iid) in host.plumber.links()


def _unchecked(path: str, content: str = "") -> ConfigFile:
    """A file an older server let through (today's model refuses the agent's own files)."""
    return ConfigFile.model_construct(path=path, mode=0o644, content=content)


def test_a_config_file_over_a_file_the_agent_writes_is_refused(host):
    iid = new_id()
    want = paas(iid).model_copy(update={"files": [_unchecked("/etc/hosts")]})
    host.worker().run(Step.spawn, want)
    assert host.driver.containers == {}
    assert "/etc/hosts" in host.server.reports_of(iid)[-1].error


# --- health


CHECK = HealthCheck(kind="tcp", port=80, interval_s=0.2, unhealthy_after=2, start_period_s=5)


def test_health_state_machine():
    s = HealthState(CHECK, since=100.0)
    assert s.record(False, "refused", 101.0) is None  # in the start period: not counted
    assert (s.status, s.failures) == ("starting", 0)
    assert s.record(True, "", 102.0) == Health(status="healthy")
    assert s.record(True, "", 103.0) is None  # no change, nothing to report
    assert s.record(False, "refused", 103.5) is None  # once healthy, failures count
    changed = s.record(False, "refused", 104.0)
    assert changed == Health(status="unhealthy", failures=2, detail="refused")
    assert s.record(False, "refused", 110.0) is None and s.failures == 3
    assert s.record(True, "", 111.0) == Health(status="healthy")


def test_health_state_after_the_start_period_counts_failures_while_starting():
    s = HealthState(CHECK, since=100.0)
    assert s.record(False, "a", 106.0) is None
    assert s.record(False, "b", 107.0) == Health(status="unhealthy", failures=2, detail="b")


class FakeProber:
    """Answers what ``ok[instance id]`` says; counts probes."""

    def __init__(self) -> None:
        self.ok: dict[str, bool] = {}
        self.probes = 0

    async def probe(self, target: Target) -> tuple[bool, str]:
        self.probes += 1
        return self.ok.get(target.instance_id, False), "connection refused"

    def release(self, target: Target) -> None:
        pass


def test_the_checker_reports_each_change_and_starts_over_after_a_restart():
    prober, seen = FakeProber(), []
    lock = threading.Lock()

    def on_change(iid, health):
        with lock:
            seen.append(health.status)

    check = CHECK.model_copy(update={"start_period_s": 0})
    checker = HealthChecker(prober, on_change)
    target = Target("i1", check, "198.18.0.5", 0, "t1")
    try:
        checker.sync([target])
        wait_for(lambda: seen == ["unhealthy"], 10, "unhealthy")
        prober.ok["i1"] = True
        wait_for(lambda: seen == ["unhealthy", "healthy"], 10, "healthy")
        prober.ok["i1"] = False  # (a healthy at once would replace the unsent starting)
        checker.sync([Target("i1", check, "198.18.0.5", 0, "t2")])  # restarted
        wait_for(lambda: seen[2:3] == ["starting"], 10, "starting again")
        prober.ok["i1"] = True
        wait_for(lambda: seen[3:] == ["healthy"], 10, "healthy again")
        checker.sync([])
        wait_for(lambda: checker.health("i1") is None, 10, "forgotten")
    finally:
        checker.stop()


def test_the_agent_reports_a_health_change_without_waiting_for_a_step(host):
    prober = FakeProber()
    iid = new_id()
    want = paas(iid, check=CHECK.model_copy(update={"start_period_s": 0}))
    agent = agent_of(host, prober)
    try:
        agent.worker.run(Step.spawn, want)
        agent.desired = {iid: want}
        prober.ok[iid] = True
        agent.reconcile_once()
        wait_for(lambda: any(r.health for r in host.server.reports_of(iid)), 10, "a report")
        [rep] = [r for r in host.server.reports_of(iid) if r.health]
        assert rep.health == Health(status="healthy") and rep.rebuilt_seq == 0
        assert agent.health.health(iid) == Health(status="healthy")
        [sample] = agent.health_samples()  # what /metrics serves
        assert (sample.name, sample.labels["status"], sample.value) == (
            "dockyard_instance_healthy",
            "healthy",
            1.0,
        )
    finally:
        agent.health.stop()


def test_a_cmd_check_runs_through_the_driver(host):
    from dockyard.compute.probes import HostProber

    iid = new_id()
    host.worker().run(Step.spawn, paas(iid))
    host.driver.exec_handler = lambda i, cmd: ExecResult(1, "pid file missing")
    check = HealthCheck(kind="cmd", command=["test", "-f", "/run/app.pid"])

    ok, detail = asyncio.run(HostProber(host.driver).probe(Target(iid, check, "", 0, "t")))
    assert not ok and detail == "test exited 1: pid file missing"
    host.driver.destroy(iid)
    ok, detail = asyncio.run(HostProber(host.driver).probe(Target(iid, check, "", 0, "t")))
    assert not ok and "not running" in detail



def test_a_health_report_that_failed_is_sent_again_at_the_next_sync(caplog):
    prober, told, attempts = FakeProber(), [], []

    def on_change(iid, health):
        attempts.append(health.status)
        if len(attempts) == 1:
            raise TemporaryError("the server is away")
        told.append(health.status)

    prober.ok["i1"] = True
    checker = HealthChecker(prober, on_change)
    target = Target("i1", CHECK, "198.18.0.5", 0, "t1")
    try:
        checker.sync([target])
        # the failure as the agent's log says it (its report is then kept for a resend)
        retry = "could not report the health of i1: the server is away; will retry"
        wait_for(lambda: retry in caplog.messages, 10, "the first try to fail")
        assert attempts == ["healthy"] and told == []
        checker.sync([target])  # the agent's next reconcile pass
        wait_for(lambda: told == ["healthy"], 10, "the report sent again")
    finally:
        checker.stop()


def test_two_hundred_instances_are_checked_by_one_loop_not_two_hundred_threads():
    prober, reports = FakeProber(), []
    checker = HealthChecker(prober, lambda iid, h: reports.append(iid))
    before = threading.active_count()
    targets = [Target(f"i{n}", CHECK, "198.18.0.5", 0, "t1") for n in range(200)]
    for t in targets:
        prober.ok[t.instance_id] = True
    try:
        checker.sync(targets)
        wait_for(lambda: len(set(reports)) == 200, 30, "200 instances healthy")
        assert threading.active_count() - before <= 2  # the loop and the reporter
    finally:
        checker.stop()


def test_a_rebuild_with_a_config_file_over_an_agent_file_keeps_the_old_container(host):
    iid = new_id()
    host.worker().run(Step.spawn, paas(iid))
    before = host.driver.inspect(iid)
    clash = [_unchecked("/etc/resolv.conf", "nameserver 1.1.1.1\n")]
    want = paas(iid, seq=1).model_copy(update={"files": clash})

    assert one_pass(host, want) == Step.rebuild

    assert host.driver.inspect(iid) == before
    assert "/etc/resolv.conf" in host.server.reports_of(iid)[-1].error
    assert one_pass(host, want) != Step.rebuild  # refused for good: not again every pass
    fixed = paas(iid, seq=2)
    assert one_pass(host, fixed) == Step.rebuild  # the next rebuild_seq is tried
    assert host.driver.inspect(iid).rebuild_seq == 2


# --- the review's findings (C, D)


def test_a_rebuild_the_server_ended_is_not_retried_and_holds_up_no_later_task(host):
    iid = new_id()
    host.worker().run(Step.spawn, paas(iid))
    before = host.driver.inspect(iid)
    want = paas(iid, seq=1, image="busybox:nowhere")
    with pytest.raises(TemporaryError):
        one_pass(host, want)
    [failed] = [r for r in host.server.reports_of(iid) if r.error]
    assert failed.task_done == TaskState.rebuilding
    ended = paas(iid, seq=1, image="busybox:nowhere", task=None)  # the server ended it
    assert one_pass(host, ended) is None
    reboot = ended.model_copy(update={"reboot_seq": 1, "task_state": TaskState.rebooting})
    assert one_pass(host, reboot) == Step.reboot
    migrating = ended.model_copy(update={"task_state": TaskState.migrating})
    assert one_pass(host, migrating) != Step.rebuild
    assert host.driver.inspect(iid).container_id == before.container_id
    assert not [r for r in host.server.reports_of(iid)[1:] if r.rebuilt_seq == 1]


def _healthy_agent(host, prober, iid):
    want = paas(iid, check=CHECK.model_copy(update={"start_period_s": 0}))
    agent = agent_of(host, prober)
    agent.worker.run(Step.spawn, want)
    agent.desired = {iid: want}
    prober.ok[iid] = True
    agent.reconcile_once()
    wait_for(lambda: agent.health.health(iid) == Health(status="healthy"), 10, "healthy")
    return agent, want


def test_a_stopped_instance_is_reported_without_health(host):
    iid = new_id()
    agent, want = _healthy_agent(host, FakeProber(), iid)
    try:
        stop = want.model_copy(update={"power": "stopped", "task_state": TaskState.powering_off})
        agent.worker.run(Step.stop, stop)
        last = host.server.reports_of(iid)[-1]
        assert last.power_state == PowerState.shutdown and last.health is None
    finally:
        agent.health.stop()


def test_a_rebuilt_instance_is_reported_starting_not_with_the_old_containers_health(host):
    iid = new_id()
    agent, want = _healthy_agent(host, FakeProber(), iid)
    try:
        rebuild = want.model_copy(
            update={"rebuild_seq": 1, "image_ref": NEW_IMAGE, "task_state": TaskState.rebuilding}
        )
        agent.worker.run(Step.rebuild, rebuild)
        last = host.server.reports_of(iid)[-1]
        assert last.rebuilt_seq == 1 and last.task_done == TaskState.rebuilding
        assert last.health == Health(status="starting")
    finally:
        agent.health.stop()


# --- A: no config file over a mount point or the kernel's directories


@pytest.mark.parametrize("path", ["/data", "/data/app.conf", "/proc/x", "/run/dockyard/x"])
def test_a_config_file_at_or_under_a_volume_or_a_reserved_directory_is_refused(host, path):
    iid = new_id()
    data = VolumeAttachment(host_path="/srv/tenant-data", path="/data")
    want = paas(iid, volumes=[data]).model_copy(update={"files": [_unchecked(path, "x")]})
    host.worker().run(Step.spawn, want)
    assert host.driver.containers == {}
    assert path in host.server.reports_of(iid)[-1].error


# --- B: a rebuild whose files fail ends, reported


def _passes(agent, host, n):
    for _ in range(n):
        host.clock.now += 60  # past any back-off
        agent.reconcile_once()


@pytest.mark.parametrize(
    "error",
    [
        TemporaryError("dockerd is not answering"),
        PermanentError("dockerd refused the config files: Error processing tar file"),
    ],
)
def test_a_rebuild_whose_files_keep_failing_after_the_old_container_went_ends_reported(
    host, error
):
    iid = new_id()
    agent = agent_of(host, FakeProber())
    try:
        agent.worker.run(Step.spawn, paas(iid))
        want = paas(iid, seq=1, image=NEW_IMAGE)
        agent.desired, agent.generation = {iid: want}, 7
        host.driver.fail_next("put_files", error, times=1000)
        _passes(agent, host, 15)
        errors = [r for r in host.server.reports_of(iid) if r.error]
        assert errors and errors[0].task_done == TaskState.rebuilding
        assert len(errors) == 1  # once, not every pass
        # not the new image with the old files: the half-made container goes, and the
        # settings the server puts back are spawned
        assert host.driver.inspect(iid) is None
        host.driver.fail_next("put_files", error, times=0)
        rolled_back = paas(iid, seq=1, task=None)
        agent.desired, agent.generation = {iid: rolled_back}, 8
        _passes(agent, host, 2)
        obs = host.driver.inspect(iid)
        assert obs.running and obs.rebuild_seq == 1
        assert host.driver.containers[iid].spec.image_ref == IMAGE
    finally:
        agent.health.stop()


# --- E: a flapping check is reported damped, its latest status


class FlappingProber(FakeProber):
    async def probe(self, target: Target) -> tuple[bool, str]:
        self.probes += 1
        if target.instance_id in self.ok:
            return self.ok[target.instance_id], "refused"
        return self.probes % 2 == 0, "refused"


def test_a_flapping_check_is_reported_at_most_every_two_seconds_and_ends_on_the_latest():
    prober, seen = FlappingProber(), []
    check = HealthCheck(kind="tcp", port=80, interval_s=0.2, unhealthy_after=1,
                        start_period_s=0)  # fmt: skip
    checker = HealthChecker(prober, lambda iid, h: seen.append(h.status))
    try:
        checker.sync([Target("i1", check, "198.18.0.5", 0, "t1")])
        wait_for(lambda: prober.probes >= 4, 10, "flapping")
        time.sleep(1.0)  # 5 more flaps
        assert prober.probes >= 8 and 1 <= len(seen) <= 2  # not one report per flap
        prober.ok["i1"] = True
        wait_for(lambda: seen[-1] == "healthy", 5, "the latest status reported")
        assert len(seen) <= 4
        assert len(checker._pending) <= 1
    finally:
        checker.stop()


# --- F: cmd checks: one in flight per instance, not failed for the agent's own load


def test_a_cmd_check_runs_at_most_every_five_seconds():
    prober = FakeProber()
    check = HealthCheck(kind="cmd", command=["true"], interval_s=0.2)
    checker = HealthChecker(prober, lambda iid, h: None)
    try:
        checker.sync([Target("i1", check, "", 0, "t1")])
        wait_for(lambda: prober.probes == 1, 10, "the first check")
        time.sleep(1.5)
        assert prober.probes == 1
    finally:
        checker.stop()


def test_slow_checks_of_others_do_not_fail_an_instance_and_one_runs_at_a_time(host):
    from dockyard.compute.probes import EXEC_THREADS, HostProber

    slow = [new_id() for _ in range(EXEC_THREADS)]
    quick = new_id()
    for i, iid in enumerate([*slow, quick]):
        host.worker().run(Step.spawn, paas(iid, last_octet=10 + i))
    started, release = threading.Event(), threading.Event()

    def handler(iid, cmd):
        if iid in slow:
            started.set()
            release.wait(10)
        return ExecResult(0, "")

    host.driver.exec_handler = handler
    check = HealthCheck(kind="cmd", command=["true"], timeout_s=0.5)
    prober = HostProber(host.driver, in_netns=False)

    async def scenario():
        hogs = [asyncio.ensure_future(prober.probe(Target(i, check, "", 0, "t"))) for i in slow]
        await asyncio.sleep(0.1)
        again = await prober.probe(Target(slow[0], check, "", 0, "t"))
        asyncio.get_running_loop().call_later(1.0, release.set)  # a thread free after 1 s
        mine = await prober.probe(Target(quick, check, "", 0, "t"))
        await asyncio.gather(*hogs)
        return again, mine

    again, mine = asyncio.run(scenario())
    assert again[0] is None and "still runs" in again[1]  # not a second exec
    assert mine[0] is None and "no thread free" in mine[1]  # not the instance's failure


# --- G: a probe never enters a namespace the container's PID no longer names


def test_a_probe_does_not_enter_the_namespace_of_a_reused_pid(host):
    """The target's PID is now another process (here: this one, in the host's network
    namespace, where something listens on the port): the probe must not connect."""
    import socket as socketlib

    from dockyard.compute.probes import HostProber

    iid = new_id()
    host.worker().run(Step.spawn, paas(iid))
    listener = socketlib.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    check = HealthCheck(kind="tcp", port=port, timeout_s=2)
    reused = Target(iid, check, "127.0.0.1", os.getpid(), "t-old")  # died, PID reused
    prober = HostProber(host.driver)
    try:
        ok, detail = asyncio.run(prober.probe(reused))
        assert ok is False and "gone" in detail
        assert prober.netns is not None and prober.netns.held() == 0
    finally:
        listener.close()


def test_a_probe_keeps_one_namespace_fd_per_container_start_and_releases_it(host):
    import socket as socketlib

    from dockyard.compute.probes import HostProber

    iid = new_id()
    host.worker().run(Step.spawn, paas(iid))
    obs = host.driver.inspect(iid)
    host.driver.containers[iid].obs = dataclasses.replace(obs, pid=os.getpid())
    listener = socketlib.create_server(("127.0.0.1", 0))
    check = HealthCheck(kind="tcp", port=listener.getsockname()[1], timeout_s=2)
    target = Target(iid, check, "127.0.0.1", os.getpid(), obs.started_at)
    prober = HostProber(host.driver)
    fds = len(os.listdir("/proc/self/fd"))
    threads = threading.active_count()

    async def twenty():
        return await asyncio.gather(*(prober.probe(target) for _ in range(20)))

    try:
        assert all(ok for ok, _ in asyncio.run(twenty()))
        assert prober.netns is not None and prober.netns.held() == 1
        assert threading.active_count() - threads <= 2  # the helper threads, not one each
        prober.release(target)
        assert prober.netns.held() == 0 and len(os.listdir("/proc/self/fd")) <= fds
    finally:
        listener.close()


def test_after_a_failed_rebuild_the_old_container_that_runs_on_is_checked_and_reported(host):
    """Its label says rebuild N-1 while the server's is N: health must still follow it."""
    iid = new_id()
    prober = FakeProber()
    agent, want = _healthy_agent(host, prober, iid)
    try:
        failing = want.model_copy(
            update={"rebuild_seq": 1, "image_ref": "busybox:nowhere",
                    "task_state": TaskState.rebuilding}
        )  # fmt: skip
        agent.desired = {iid: failing}
        agent.reconcile_once()  # the pull fails: reported, the old container runs on
        # not checked while the rebuild lasts (sync applies on the checker's own loop:
        # asserted at once, this failed on a loaded machine)
        wait_for(lambda: agent.health.health(iid) is None, 10, "its checks to stop")
        ended = want.model_copy(update={"rebuild_seq": 1})  # the server ended it
        agent.desired = {iid: ended}
        agent.reconcile_once()
        wait_for(lambda: agent.health.health(iid) == Health(status="healthy"), 10, "checked")
        prober.ok[iid] = False
        wait_for(
            lambda: any(
                r.health is not None and r.health.status == "unhealthy"
                for r in host.server.reports_of(iid)
            ),
            10,
            "its failures reported",
        )
        stop = ended.model_copy(update={"reboot_seq": 1, "task_state": TaskState.rebooting})
        agent.worker.run(Step.reboot, stop)
        assert host.server.reports_of(iid)[-1].health is not None
    finally:
        agent.health.stop()
