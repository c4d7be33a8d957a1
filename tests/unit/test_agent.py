"""The agent's reconcile passes on a host of fakes: back-off, give-up, orphans, settling,
stale links. Steps run inside the pass (InlineExecutor) and time moves by hand."""

from __future__ import annotations

import pytest

from dockyard.compute.agent import MAX_TEMPORARY_FAILURES
from dockyard.compute.driver import ContainerEvent, ContainerSpec
from dockyard.compute.monitor import Counters
from dockyard.errors import PermanentError, TemporaryError
from dockyard.model import PowerState, TaskState
from dockyard.network.plumbing import host_ifname, peer_ifname
from tests.unit.fakehost import IMAGE, FakeHost, instance, new_id


@pytest.fixture
def host(tmp_path):
    return FakeHost(tmp_path)


def _pass(agent, host):
    """What the long poll would do with the server's state, then one reconcile pass."""
    agent.receive(host.server.state)
    agent.reconcile_once()


def test_a_wanted_instance_is_spawned_plumbed_and_reported(host):
    iid = new_id()
    host.server.publish(instance(iid))

    _pass(host.agent(), host)

    assert host.driver.inspect(iid).running
    assert host_ifname(iid) in host.plumber.links()
    assert [(r.power_state, r.task_done) for r in host.server.reports_of(iid)] == [
        (PowerState.running, TaskState.spawning)
    ]


def test_a_spawn_that_fails_permanently_is_cleaned_up_and_reported(host):
    iid = new_id()
    host.server.publish(instance(iid))
    host.driver.fail_next("start", PermanentError("bind source /srv/x does not exist"))

    _pass(host.agent(), host)

    assert host.driver.containers == {}
    assert host.plumber.links() == set()
    assert host.files_left(iid) == []
    [rep] = host.server.reports_of(iid)
    assert rep.error == "bind source /srv/x does not exist"
    assert rep.task_done == TaskState.spawning


def test_temporary_spawn_failures_back_off_longer_each_time_then_the_agent_gives_up(host):
    iid = new_id()
    host.server.publish(instance(iid))
    agent = host.agent()
    agent.receive(host.server.state)
    tries: list[float] = []  # when the agent tried to create the container
    start = host.clock.now
    while len(tries) < MAX_TEMPORARY_FAILURES and host.clock.now < start + 120:
        creates = host.driver.calls.count("create")
        host.driver.fail_next("create", TemporaryError("dockerd is restarting"))
        agent.reconcile_once()
        if host.driver.calls.count("create") > creates:
            tries.append(host.clock.now)
            assert host.server.reports == [] or len(tries) == MAX_TEMPORARY_FAILURES
        host.clock.now += 0.25

    assert len(tries) == MAX_TEMPORARY_FAILURES
    waits = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert all(later > earlier for earlier, later in zip(waits, waits[1:], strict=False)), waits
    # the fifth failure: it gives up, removes what the tries left and says why
    [rep] = host.server.reports_of(iid)
    assert rep.error == f"gave up after {MAX_TEMPORARY_FAILURES} tries: dockerd is restarting"
    assert rep.task_done == TaskState.spawning
    assert host.driver.containers == {}
    assert host.files_left(iid) == []


def test_a_step_that_succeeds_after_a_temporary_failure_is_not_reported_as_an_error(host):
    iid = new_id()
    host.server.publish(instance(iid))
    agent = host.agent()
    host.plumber.fail_next("plumb", TemporaryError("RTNETLINK answers: Device or resource busy"))

    _pass(agent, host)
    assert host.server.reports == []  # still trying
    host.clock.now += 10
    agent.reconcile_once()

    assert host.driver.inspect(iid).running and host_ifname(iid) in host.plumber.links()
    assert [r.error for r in host.server.reports_of(iid)] == [None]


def test_a_container_nobody_wants_is_destroyed_with_its_port_and_files(host):
    keep, orphan = new_id(), new_id()
    host.server.publish(instance(keep), instance(orphan, last_octet=6))
    agent = host.agent()
    _pass(agent, host)
    assert host.driver.inspect(orphan).running

    host.server.publish(instance(keep, task=None, power_state=PowerState.running))
    _pass(agent, host)

    assert set(host.driver.containers) == {keep}
    assert set(host.plumber.ports) == {host_ifname(keep)}
    assert host.files_left(orphan) == []
    assert host.files_left(keep) != []


def test_an_agent_that_never_heard_from_the_server_destroys_nothing(host):
    stranger = new_id()
    host.driver.create(
        ContainerSpec(stranger, "old", "old", IMAGE, None, 1, [], 64, 100)
    )  # left by an earlier run

    host.agent().reconcile_once()  # no desired state, cached or received

    assert set(host.driver.containers) == {stranger}


def test_a_step_done_and_reported_is_not_repeated_until_the_server_says_more(host):
    iid = new_id()
    host.server.publish(instance(iid))
    agent = host.agent()
    _pass(agent, host)

    # the server has not taken the report in yet: same generation, still "spawning"
    for _ in range(3):
        host.clock.now += 11
        _pass(agent, host)

    assert host.driver.calls.count("create") == 1
    assert len(host.server.reports_of(iid)) == 1
    # a new generation that still says "spawning" half a minute on (the report was
    # lost): said again
    host.server.publish(instance(iid))
    _pass(agent, host)
    assert host.driver.calls.count("create") == 1
    assert [r.task_done for r in host.server.reports_of(iid)] == [TaskState.spawning] * 2


def test_another_instances_create_does_not_repeat_a_report_the_server_is_taking_in(host):
    """Twenty creates at once: each one's pass still sees the spawns before it waiting
    (their reports are on the way) and used to report each of them again."""
    first, second = new_id(), new_id()
    host.server.publish(instance(first))
    agent = host.agent()
    _pass(agent, host)
    host.server.publish(instance(first), instance(second, last_octet=6))  # a new generation
    _pass(agent, host)
    assert len(host.server.reports_of(first)) == 1
    assert len(host.server.reports_of(second)) == 1


def test_stale_links_of_known_instances_go_and_other_links_stay(host):
    mine, foreign = new_id(), new_id()
    host.server.publish(instance(mine))
    agent = host.agent()
    _pass(agent, host)
    # the container died and the agent stopped before unplumbing; the user stopped it
    host.driver.stop(mine)
    others = {host_ifname(foreign), peer_ifname(foreign), "dyt-unit", "eth0", "dy123"}
    host.plumber.foreign |= others
    host.server.publish(instance(mine, power="stopped", task=None, power_state=PowerState.shutdown))

    _pass(agent, host)

    assert host.plumber.links() == others
    assert host_ifname(mine) not in host.plumber.ports  # its port rules went with it


def test_bridges_get_their_iptables_rule_when_bridged_traffic_is_filtered(host):
    host.plumber.filtered = True
    iid = new_id()
    host.server.publish(instance(iid))
    _pass(host.agent(), host)
    assert host.plumber.allowed == {"dyt-unit"}

    host.server.publish(instance(iid, power="deleted", task=TaskState.deleting))
    _pass(host.agent(), host)

    assert host.plumber.allowed == set()  # the bridge's last port took its rule along
    assert host.server.reports_of(iid)[-1].gone


def test_an_oom_kill_is_reported_once(host):
    iid = new_id()
    host.server.publish(instance(iid))
    agent = host.agent()
    _pass(agent, host)
    agent.reconcile_once()  # the start event's pass: it sees the container running
    host.meter.counted[iid] = Counters(oom_kills=1)

    for _ in range(3):
        for want, obs in agent.running():
            agent.monitor.check(want, obs)

    [event] = host.server.events_of[iid]
    assert "OOM-killed at the 64 MB memory limit" in event.message
    assert host.views.refreshed[iid] == 3


def test_the_desired_state_survives_an_agent_restart(host):
    iid = new_id()
    host.server.publish(instance(iid))
    _pass(host.agent(), host)
    host.driver.stop(iid)  # the host rebooted; the server is unreachable

    host.agent().reconcile_once()  # a new agent, working from its cache

    assert host.driver.inspect(iid).running
    assert host.plumber.ports[host_ifname(iid)].ip == "198.18.0.5"


def test_a_port_whose_rules_were_flushed_is_guarded_again_within_a_second(host):
    """`nft flush ruleset` (or an upgrade from an agent without rules) must not leave
    a running instance open to spoofing until it restarts: the next pass a second
    later puts the rules back (passes in between, on a busy host, do not look)."""
    iid = new_id()
    host.server.publish(instance(iid))
    agent = host.agent()
    _pass(agent, host)
    net = host.plumber.ports[host_ifname(iid)]
    host.plumber.flush_rules()
    assert host_ifname(iid) not in host.plumber.ports
    host.clock.now += 1.0

    _pass(agent, host)

    assert host.plumber.ports[host_ifname(iid)] == net
    assert host.plumber.unguarded({iid}) == set()


def test_threads_noting_the_servers_answer_at_once_never_fail(host):
    """The long poll and the heartbeat both write STATE/contact: one thread's rename
    once took the other's temporary file, and the long poll's thread died of it."""
    import threading

    store = host.agent().store
    errors: list[BaseException] = []

    def note() -> None:
        try:
            for i in range(300):
                store.heard_from_server(float(i))
        except BaseException as exc:  # noqa: BLE001 (the test counts them)
            errors.append(exc)

    threads = [threading.Thread(target=note) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.last_contact() is not None
    assert [p.name for p in host.state_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_a_loop_that_fails_unexpectedly_runs_again(host):
    agent = host.agent()
    runs: list[int] = []

    def loop() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise FileNotFoundError("contact.tmp")
        agent.stop_event.set()

    agent.stop_event.wait = lambda timeout=None: False  # type: ignore[method-assign]
    agent._supervised(loop)
    assert len(runs) == 3


def test_the_agent_beats_at_the_pace_the_servers_answer_sets(host):
    """A server with a short --host-down-after answers a short pace: the agent's next
    heartbeat comes that much later, not 10 s later (its hosts flapped down and up)."""
    import threading

    agent = host.agent()
    host.server.beat_every = 0.1
    beats: list[float] = []
    real = host.server.heartbeat

    def counted(status=None):
        beats.append(1.0)
        if len(beats) >= 4:
            agent.stop_event.set()
        return real(status)

    host.server.heartbeat = counted
    agent.heartbeat()  # the first answer sets the pace
    assert agent.beat_every == 0.1
    loop = threading.Thread(target=agent._heartbeat_loop)
    loop.start()
    loop.join(timeout=5)
    assert not loop.is_alive() and len(beats) >= 4


def test_a_pass_that_listed_dockerd_before_a_step_ended_plans_nothing_for_it(host):
    """Twenty creates at once: a pass lists dockerd, an instance's spawn ends meanwhile,
    and that pass (at a newer generation, the spawn's task still waiting) saw no
    container: it spawned the instance again, a second create and its veth replaced
    under the running instance. Now the spawn's end wakes a pass that looks again."""
    iid = new_id()
    host.server.publish(instance(iid))
    agent = host.agent()
    listing = host.driver.list

    def listed_while_the_spawn_ends():
        seen = [o for o in listing() if o.instance_id != iid]  # before its container was
        agent._done(iid)  # what the end of its spawn step does
        return seen

    _pass(agent, host)  # spawned
    assert host.driver.calls.count("create") == 1
    host.server.publish(instance(iid), instance(new_id(), last_octet=6))  # newer generation
    host.driver.list = listed_while_the_spawn_ends
    _pass(agent, host)
    host.driver.list = listing
    assert host.driver.calls.count("create") == 2  # the other instance's only
    assert len(host.server.reports_of(iid)) == 1
    _pass(agent, host)  # the pass the step's end woke: it looks again, nothing to do
    assert host.driver.calls.count("create") == 2
    assert len(host.server.reports_of(iid)) == 1


def test_a_start_a_step_made_wakes_no_pass_and_a_death_always_does(host):
    """A step's own start would wake a pass in its middle, one that can claim nothing
    for that instance; its end wakes one. A death wakes one at once, mid-step too: the
    pass stops the health checks of the dead container (a reboot's)."""
    import threading

    from dockyard.lab.procs import wait_for

    agent = host.agent()
    busy, idle = new_id(), new_id()
    agent._busy.add(busy)
    woken: list[int] = []
    agent.wake = type("Wake", (), {"set": lambda self: woken.append(1)})()
    loop = threading.Thread(target=agent._events_loop, daemon=True)
    loop.start()
    host.driver._events.put(ContainerEvent(busy, "start"))
    host.driver._events.put(ContainerEvent(idle, "start"))  # taken after the busy one's
    try:
        wait_for(lambda: len(woken) >= 2, 5, "the subscription's and the idle one's wake")
        assert len(woken) == 2
        host.driver._events.put(ContainerEvent(busy, "die"))
        wait_for(lambda: len(woken) >= 3, 5, "the busy one's death")
    finally:
        agent.stop_event.set()
        loop.join(timeout=5)
