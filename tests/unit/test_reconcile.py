import uuid

from hypothesis import given
from hypothesis import strategies as st

from dockyard.compute.driver import Observed, resources_key
from dockyard.compute.reconcile import Step, plan, spec_of
from dockyard.compute.store import Record
from dockyard.model import DesiredInstance, ImageSource, NetSpec, PowerState, TaskState
from dockyard.network.plumbing import host_ifname, ifb_ifname, peer_ifname


def want(iid, power="running", task=None, power_state=PowerState.running, reboot_seq=0):
    net = NetSpec(
        bridge="br0",
        uplink=None,
        mtu=1500,
        ip="198.18.0.5",
        prefixlen=24,
        gateway="198.18.0.1",
        mac="02:00:c6:12:00:05",
        dns=[],
    )
    return DesiredInstance(
        id=iid,
        name="n",
        hostname="n",
        image_id="i",
        image_ref="r",
        image_source=ImageSource.docker,
        image_sha256=None,
        command=None,
        vcpus=1,
        memory_mb=64,
        dedicated=False,
        cpuset=[],
        pids_limit=100,
        volumes=[],
        net=net,
        power=power,
        task_state=task,
        power_state=power_state,
        reboot_seq=reboot_seq,
    )


def running(iid, started="t1"):
    return Observed(instance_id=iid, running=True, pid=42, started_at=started)


def stopped(iid):
    return Observed(instance_id=iid, running=False, pid=0, started_at="t1")


A = str(uuid.UUID(int=1 << 120))


def test_unknown_desired_state_destroys_nothing():
    p = plan(None, {A: running(A)}, {}, {host_ifname(A)})
    assert not p


def test_spawn_start_plumb_and_in_sync():
    w = {A: want(A, task=TaskState.spawning, power_state=PowerState.nostate)}
    assert plan(w, {}, {}, set()).steps == {A: Step.spawn}
    assert plan(w, {A: stopped(A)}, {}, set()).steps == {A: Step.start}
    # container restarted behind our back: new start time, the old veth died with its netns
    rec = {A: Record(A, plumbed_for="t0")}
    assert plan(w, {A: running(A, "t1")}, rec, set()).steps == {A: Step.plumb}
    rec = {A: Record(A, plumbed_for="t1", applied=applied(want(A)))}
    assert plan(w, {A: running(A)}, rec, {host_ifname(A)}).steps == {A: Step.report}
    in_sync = {A: want(A)}
    assert not plan(in_sync, {A: running(A)}, rec, {host_ifname(A)})


def applied(w):
    return resources_key(spec_of(w))


def test_changed_limits_are_applied_live():
    rec = {A: Record(A, plumbed_for="t1", applied=applied(want(A)))}
    bigger = want(A)
    bigger = bigger.model_copy(update={"memory_mb": 128, "task_state": TaskState.resizing})
    assert plan({A: bigger}, {A: running(A)}, rec, {host_ifname(A)}).steps == {A: Step.update}


def test_reboot_stop_destroy():
    rec = {A: Record(A, plumbed_for="t1", reboot_seq=1)}
    links = {host_ifname(A)}
    assert plan({A: want(A, reboot_seq=2)}, {A: running(A)}, rec, links).steps == {A: Step.reboot}
    assert plan({A: want(A, "stopped")}, {A: running(A)}, rec, links).steps == {A: Step.stop}
    assert plan({A: want(A, "deleted")}, {A: running(A)}, rec, links).steps == {A: Step.destroy}


def test_orphans_and_stale_links():
    b = str(uuid.UUID(int=2 << 120))
    links = {host_ifname(b), peer_ifname(b), "eth0", "dyk-demo", host_ifname(A)}
    p = plan({A: want(A)}, {b: running(b)}, {}, links, known_files={b})
    assert p.orphans == {b}
    assert p.stale_links == {host_ifname(b), peer_ifname(b)}


def test_links_of_instances_it_does_not_know_are_left_alone():
    """Another agent in the same network namespace (or a test's veth) owns them."""
    stranger = str(uuid.UUID(int=3 << 120))
    links = {host_ifname(stranger), peer_ifname(stranger), ifb_ifname(stranger)}
    assert not plan({A: want(A)}, {}, {}, links).stale_links


ids = st.sampled_from([str(uuid.UUID(int=i << 120)) for i in range(1, 6)])


@given(
    st.dictionaries(ids, st.sampled_from(["running", "stopped", "deleted"])),
    st.dictionaries(ids, st.booleans()),
)
def test_plan_properties(desired_power, observed_running):
    desired = {i: want(i, p) for i, p in desired_power.items()}
    observed = {i: running(i) if r else stopped(i) for i, r in observed_running.items()}
    p = plan(desired, observed, {}, set())
    # nothing wanted survives as an orphan, nothing unwanted is kept
    assert p.orphans == set(observed) - set(desired)
    for i, step in p.steps.items():
        if desired[i].power == "deleted":
            assert step == Step.destroy
        if desired[i].power == "running" and i not in observed:
            assert step == Step.spawn
        if desired[i].power == "stopped":
            assert step in (Step.stop, Step.report)
    # every running-wanted instance is acted on until it is plumbed
    for i, w in desired.items():
        if w.power == "running":
            assert i in p.steps
