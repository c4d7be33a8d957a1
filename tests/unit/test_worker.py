"""One reconcile step on a host of fakes: what is left on the host, what the server hears."""

from __future__ import annotations

import pytest

from dockyard.compute.reconcile import Step
from dockyard.errors import PermanentError, TemporaryError
from dockyard.model import ImageSource, Limits, PowerState, TaskState
from dockyard.network.plumbing import host_ifname, ifb_ifname
from tests.unit.fakehost import FakeHost, instance, new_id


@pytest.fixture
def host(tmp_path):
    return FakeHost(tmp_path)


def test_a_spawn_runs_the_instance_on_its_bridge_and_reports_it(host):
    iid = new_id()
    want = instance(iid, limits=Limits(net_egress_kbit=800))

    host.worker().run(Step.spawn, want)

    assert host.driver.inspect(iid).running
    port = host.plumber.ports[host_ifname(iid)]
    assert (port.bridge, port.ip, port.mac) == ("dyt-unit", "198.18.0.5", "02:00:c6:12:00:05")
    assert host.plumber.shaped[iid].net_egress_kbit == 800
    assert ifb_ifname(iid) in host.plumber.links()
    assert host.views.prepared[iid] == 64
    assert (host.state_dir / "instances" / iid / "hosts").read_text().endswith("198.18.0.5\tvm5\n")
    [rep] = host.server.reports_of(iid)
    assert (rep.power_state, rep.task_done, rep.error) == (
        PowerState.running,
        TaskState.spawning,
        None,
    )



def test_a_report_goes_once_for_the_same_desired_instance(host):
    """In a burst of creates, passes started by other instances' changes still see a
    spawn's task waiting (the server's answer to its report has not come back) and plan
    the report again: the server hears it once. A new desired state, a new report, or
    REPORT_AGAIN_AFTER seconds later, and it goes again."""
    from dockyard.compute.worker import REPORT_AGAIN_AFTER

    iid = new_id()
    want = instance(iid)
    worker, now = host.worker(), [100.0]
    worker.clock = lambda: now[0]

    worker.run(Step.spawn, want)
    worker.run(Step.report, want)
    worker.run(Step.report, instance(iid))  # the same, read again from the server
    assert len(host.server.reports_of(iid)) == 1

    worker.run(Step.report, want.model_copy(update={"reboot_seq": 1}))  # the server's news
    assert len(host.server.reports_of(iid)) == 2
    host.driver.stop(iid)  # what is changed: the report too
    worker.run(Step.report, want)
    assert host.server.reports_of(iid)[-1].power_state == PowerState.shutdown
    now[0] += REPORT_AGAIN_AFTER  # a server that lost it hears it again
    worker.run(Step.report, want)
    assert len(host.server.reports_of(iid)) == 4
    # a report of another kind (a health change, say) may move the server anywhere:
    # the next settling report goes, even the same as before
    worker.tell(iid, host.server.reports_of(iid)[-1])
    worker.run(Step.report, want)
    assert len(host.server.reports_of(iid)) == 6
    worker.run(Step.destroy, want.model_copy(update={"power": "deleted"}))
    assert iid not in worker._sent  # nothing kept of a removed instance

@pytest.mark.parametrize(
    "part,method,error",
    [
        ("driver", "ensure_image", PermanentError("image busybox:fake is not on this host")),
        ("driver", "start", PermanentError("bind source /srv/x does not exist")),
        ("plumber", "prepare", PermanentError("uplink eth9 of bridge dyt-unit does not exist")),
        ("plumber", "plumb", PermanentError("uplink eth9 of bridge dyt-unit does not exist")),
        ("plumber", "shape", PermanentError("tc refused the rate")),
    ],
)
def test_a_spawn_that_fails_permanently_removes_what_it_made_and_reports_the_error(
    host, part, method, error
):
    iid = new_id()
    getattr(host, part).fail_next(method, error)

    host.worker().run(Step.spawn, instance(iid))

    assert host.driver.containers == {}  # no container
    assert host.plumber.links() == set() and host.plumber.ports == {}  # no veth, no port rules
    assert host.files_left(iid) == []  # no record, no /etc files, no view directory
    assert iid not in host.views.prepared
    [rep] = host.server.reports_of(iid)
    assert rep.error == error.detail
    assert (rep.power_state, rep.task_done) == (PowerState.nostate, TaskState.spawning)


def test_a_temporary_failure_is_left_to_the_caller_and_not_reported(host):
    iid = new_id()
    host.driver.fail_next("create", TemporaryError("dockerd is restarting"))

    with pytest.raises(TemporaryError):
        host.worker().run(Step.spawn, instance(iid))

    assert host.server.reports == []  # the agent retries; the user sees spawning still
    host.worker().run(Step.spawn, instance(iid))
    assert host.driver.inspect(iid).running
    assert [r.error for r in host.server.reports_of(iid)] == [None]


def test_a_network_that_fails_to_prepare_while_the_container_starts_is_plumbed_on_retry(host):
    iid = new_id()
    host.plumber.fail_next("prepare", TemporaryError("nft is busy"))

    with pytest.raises(TemporaryError):
        host.worker().run(Step.spawn, instance(iid))

    assert host.driver.inspect(iid).running and host.server.reports == []
    host.worker().run(Step.plumb, instance(iid))  # what the next pass plans for it
    assert host.plumber.ports[host_ifname(iid)].ip == "198.18.0.5"
    assert [r.error for r in host.server.reports_of(iid)] == [None]


def test_a_resize_below_what_the_instance_uses_is_refused_and_its_limits_stay(host):
    iid = new_id()
    worker = host.worker()
    worker.run(Step.spawn, instance(iid, memory_mb=512))
    host.meter.used[iid] = 300 * 2**20

    worker.run(Step.update, instance(iid, memory_mb=256, task=TaskState.resizing))

    assert host.driver.containers[iid].spec.memory_mb == 512
    rep = host.server.reports_of(iid)[-1]
    assert "cannot shrink memory to 256 MB" in (rep.error or "")
    assert "uses 300 MB" in (rep.error or "")


def test_a_resize_within_what_the_instance_uses_applies_live(host):
    iid = new_id()
    worker = host.worker()
    worker.run(Step.spawn, instance(iid, memory_mb=512))
    host.meter.used[iid] = 100 * 2**20

    worker.run(
        Step.update,
        instance(
            iid,
            memory_mb=256,
            limits=Limits(net_ingress_kbit=1000),
            task=TaskState.resizing,
        ),
    )

    assert host.driver.containers[iid].spec.memory_mb == 256
    assert host.plumber.shaped[iid].net_ingress_kbit == 1000
    assert host.server.reports_of(iid)[-1].error is None


def test_stop_takes_the_instance_off_its_bridge(host):
    iid = new_id()
    worker = host.worker()
    worker.run(Step.spawn, instance(iid))

    worker.run(Step.stop, instance(iid, power="stopped", task=TaskState.powering_off))

    assert not host.driver.inspect(iid).running
    assert host.plumber.links() == set()
    assert host.server.reports_of(iid)[-1].power_state == PowerState.shutdown


def test_destroy_leaves_nothing_and_is_idempotent(host):
    iid = new_id()
    worker = host.worker()
    worker.run(Step.spawn, instance(iid))

    worker.destroy(iid)
    worker.destroy(iid)  # already gone: succeeds

    assert host.driver.containers == {}
    assert host.plumber.links() == set()
    assert host.files_left(iid) == []


def test_an_image_in_the_registry_is_pulled_by_digest_not_fetched_from_the_server(host):
    iid = new_id()
    digest = "sha256:" + "a" * 64
    pulls = [f"198.18.0.1:5001/dockyard/web@{digest}", f"198.18.0.1:5000/dockyard/web@{digest}"]
    want = instance(iid).model_copy(
        update={"image_ref": "dockyard/web:1a2b3c4d", "image_source": ImageSource.rootfs,
                "image_pulls": pulls}
    )  # fmt: skip
    host.worker().run(Step.spawn, want)  # the fake server has no rootfs: a fetch would fail

    assert host.driver.inspect(iid).running
    assert host.driver.pulled == [pulls[0]]  # the AZ's cache first
