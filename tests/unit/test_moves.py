"""Instances that move, on a host of fakes: snapshot orders (once per id, flatten, rollback),
volume data restored on a move's target, and the fenced power of an evacuated instance."""

from __future__ import annotations

import dataclasses

import pytest

from dockyard.compute.agent import MAX_TEMPORARY_FAILURES
from dockyard.compute.reconcile import Step, step_for
from dockyard.compute.store import Record
from dockyard.errors import PermanentError, TemporaryError
from dockyard.model import (
    PowerState,
    SnapshotOrder,
    TaskState,
    VolumeAttachment,
    VolumeCopy,
)
from dockyard.network.plumbing import host_ifname
from tests.unit.fakehost import IMAGE, FakeHost, instance, new_id

REF = "198.18.0.1:5000/snapshots/vm5:s1"
VOL = "0f0e0d0c-0b0a-0908-0706-050403020100"
COPY = VolumeCopy(pull=f"198.18.0.1:5000/v@sha256:{'a' * 64}", checksum=f"sha256:{'b' * 64}")


@pytest.fixture
def host(tmp_path):
    return FakeHost(tmp_path)


def _pass(agent, host):
    agent.receive(host.server.state)
    agent.reconcile_once()


def _running(host, iid, **kw):
    """An instance spawned and running on the host; the server then says ``kw``."""
    volumes = kw.pop("volumes", [])
    host.worker().run(Step.spawn, instance(iid, volumes=volumes))
    host.server.reports.clear()
    return instance(iid, task=kw.pop("task", TaskState.snapshotting), volumes=volumes, **kw)


def _order(**kw) -> SnapshotOrder:
    return SnapshotOrder(id=kw.pop("id", "s1"), push_ref=REF, **kw)


def _volume() -> VolumeAttachment:
    return VolumeAttachment(volume_id=VOL, path="/data", size_mb=16)


def test_a_snapshot_of_a_running_instance_leaves_it_running_and_reports_the_digest(host):
    iid = new_id()
    want = _running(host, iid, power_state=PowerState.running, snapshot=_order())

    host.worker().run(Step.snapshot, want)

    assert host.driver.inspect(iid).running and "stop" not in host.driver.calls
    [rep] = host.server.reports_of(iid)
    assert (rep.power_state, rep.task_done, rep.error) == (
        PowerState.running,
        TaskState.snapshotting,
        None,
    )
    assert rep.snapshot.id == "s1" and rep.snapshot.digest == host.driver.registry[REF]
    assert (rep.snapshot.layers, rep.snapshot.flattened, rep.snapshot.size) == (2, False, 1234)
    assert {"commit", "push"} <= set(rep.snapshot.seconds)
    assert REF not in host.driver.images  # nothing of the snapshot left on the host


def test_a_consistent_snapshot_stops_commits_and_starts_it_again_plumbed(host):
    iid = new_id()
    want = _running(host, iid, snapshot=_order(consistent=True))
    started = host.driver.inspect(iid).started_at

    host.worker().run(Step.snapshot, want)

    obs = host.driver.inspect(iid)
    assert obs.running and obs.started_at != started
    assert host.driver.calls[-6:-3] == ["stop", "commit", "push"]
    assert host.plumber.ports[host_ifname(iid)].ip == "198.18.0.5"  # plumbed again
    [rep] = host.server.reports_of(iid)
    assert {"stop", "commit", "push", "start"} <= set(rep.snapshot.seconds)
    assert rep.power_state == PowerState.running


def test_a_migration_source_stays_stopped_and_unplugged_and_pushes_its_volumes(host):
    iid = new_id()
    order = _order(consistent=True, volumes=True)
    want = _running(
        host, iid, power="stopped", task=TaskState.migrating, snapshot=order, volumes=[_volume()]
    )

    host.worker().run(Step.snapshot, want)

    assert not host.driver.inspect(iid).running and host.plumber.links() == set()
    [rep] = host.server.reports_of(iid)
    assert (rep.power_state, rep.task_done) == (PowerState.shutdown, TaskState.migrating)
    assert rep.snapshot.volumes == {VOL: host.transfer.pushed[host.volumes.source(VOL)]}
    assert rep.snapshot.volumes[VOL].pull.startswith(
        f"198.18.0.1:5000/snapshots/vm5-volumes/{VOL}@"
    )
    assert "volumes" in rep.snapshot.seconds and "start" not in rep.snapshot.seconds


BASE = f"198.18.0.1:5000/demo@sha256:{'c' * 64}"


def _with_upper(host, iid, path):
    """The fake container's overlay upper directory is ``path`` (made)."""
    path.mkdir()
    c = host.driver.containers[iid]
    c.obs = dataclasses.replace(c.obs, writable_dir=str(path))


def test_a_migration_source_pushes_its_upper_dir_as_a_layer_on_its_image_not_a_commit(
    host, tmp_path
):
    iid = new_id()
    order = _order(consistent=True, volumes=True, layer_on=BASE)
    want = _running(
        host, iid, power="stopped", task=TaskState.migrating, snapshot=order, volumes=[_volume()]
    )
    _with_upper(host, iid, tmp_path / "upper")

    host.worker().run(Step.snapshot, want)

    assert "commit" not in host.driver.calls and "push" not in host.driver.calls
    assert host.transfer.layered == [(str(tmp_path / "upper"), BASE, REF)]
    [rep] = host.server.reports_of(iid)
    assert rep.error is None and rep.snapshot.layers == 2 and not rep.snapshot.flattened
    assert {"stop", "push", "volumes"} <= set(rep.snapshot.seconds)
    assert "commit" not in rep.snapshot.seconds
    assert VOL in rep.snapshot.volumes  # the volume went beside the root fs


def test_a_migration_source_without_an_upper_dir_commits_as_before(host):
    iid = new_id()
    order = _order(consistent=True, layer_on=BASE)
    want = _running(host, iid, power="stopped", task=TaskState.migrating, snapshot=order)

    host.worker().run(Step.snapshot, want)

    assert host.transfer.layered == [] and "commit" in host.driver.calls
    [rep] = host.server.reports_of(iid)
    assert rep.snapshot.digest == host.driver.registry[REF]


def test_a_layer_that_reaches_the_threshold_is_committed_and_flattened_instead(host, tmp_path):
    iid = new_id()
    order = _order(consistent=True, layer_on=BASE, flatten_at=2)
    want = _running(host, iid, power="stopped", task=TaskState.migrating, snapshot=order)
    _with_upper(host, iid, tmp_path / "upper")

    host.worker().run(Step.snapshot, want)

    assert len(host.transfer.layered) == 1 and "flatten" in host.driver.calls
    [rep] = host.server.reports_of(iid)
    assert (rep.snapshot.layers, rep.snapshot.flattened) == (1, True)
    assert rep.snapshot.digest == host.driver.registry[REF]


def test_an_image_at_the_threshold_is_flattened_to_one_layer(host):
    iid = new_id()
    host.driver.layer_counts[IMAGE] = 2
    want = _running(host, iid, snapshot=_order(flatten_at=3))

    host.worker().run(Step.snapshot, want)

    [rep] = host.server.reports_of(iid)
    assert (rep.snapshot.layers, rep.snapshot.flattened) == (1, True)
    assert "flatten" in rep.snapshot.seconds


def test_an_order_is_carried_out_once_and_reported_again_after_a_restart(host):
    iid = new_id()
    want = _running(host, iid, snapshot=_order())
    host.server.publish(want)
    _pass(host.agent(), host)
    host.server.publish(want)  # a new generation, the task not cleared yet
    _pass(host.agent(), host)  # a new agent too: a restart

    assert host.driver.calls.count("commit") == 1
    first, again = host.server.reports_of(iid)
    assert first == again and first.snapshot.id == "s1"


def test_a_refused_push_leaves_the_instance_running_as_it_was_and_nothing_on_the_host(host):
    iid = new_id()
    want = _running(host, iid, snapshot=_order(consistent=True))
    host.driver.fail_next("push", PermanentError("the registry refused the push: denied"))

    host.worker().run(Step.snapshot, want)

    assert host.driver.inspect(iid).running and host_ifname(iid) in host.plumber.links()
    assert REF not in host.driver.images
    [rep] = host.server.reports_of(iid)
    assert rep.error == "the registry refused the push: denied" and rep.snapshot is None
    assert rep.task_done == TaskState.snapshotting
    host.worker().run(Step.snapshot, want)  # the order ended: reported again, not redone
    assert host.driver.calls.count("commit") == 1


def test_a_registry_away_is_retried_with_the_instance_running_then_given_up(host):
    iid = new_id()
    want = _running(host, iid, snapshot=_order(consistent=True))
    host.server.publish(want)
    agent = host.agent()
    for _ in range(MAX_TEMPORARY_FAILURES):
        host.driver.fail_next("push", TemporaryError("could not push: connection refused"))
        _pass(agent, host)
        assert host.driver.inspect(iid).running  # started again after each try
        host.clock.now += 60
    [rep] = host.server.reports_of(iid)
    assert "connection refused" in rep.error and rep.task_done == TaskState.snapshotting
    assert REF not in host.driver.images


@pytest.mark.parametrize("ref", ["registry:5000/x", f"registry:5000/x@sha256:{'a' * 64}"])
def test_a_bad_push_ref_is_refused_before_anything_is_made(host, ref):
    iid = new_id()
    want = _running(host, iid, snapshot=SnapshotOrder(id="s1", push_ref=ref))

    host.worker().run(Step.snapshot, want)

    assert "commit" not in host.driver.calls
    [rep] = host.server.reports_of(iid)
    assert "names no tag" in rep.error


def test_the_plan_asks_for_a_snapshot_until_the_order_is_done_and_reported():
    want = instance(new_id(), power="stopped", task=TaskState.migrating, snapshot=_order())
    assert step_for(want, None, Record(want.id), set()) == Step.snapshot
    done = Record(want.id, snapshot_done="s1")
    assert step_for(want, None, done, set()) == Step.snapshot  # to report it again
    settled = want.model_copy(update={"task_state": None})
    assert step_for(settled, None, done, set()) is None
    rolled_back = want.model_copy(update={"power": "running"})
    assert step_for(rolled_back, None, done, set()) == Step.spawn  # not its report again


# --- volume data on a move's target


def test_a_moved_volume_is_restored_before_its_first_attach(host):
    iid = new_id()
    want = instance(iid, volumes=[_volume()], volume_sources={VOL: COPY})

    host.worker().run(Step.spawn, want)
    host.worker().run(Step.start, want)  # attached already: not restored twice

    assert host.transfer.restored == [(COPY.pull, host.volumes.source(VOL))]
    assert host.driver.inspect(iid).running and VOL in host.volumes.present()
    assert not (host.state_dir / "restoring" / VOL).exists()


def test_a_copy_that_does_not_check_out_fails_the_spawn_and_leaves_no_volume(host):
    iid = new_id()
    host.transfer.bad.add(COPY.pull)

    host.worker().run(Step.spawn, instance(iid, volumes=[_volume()], volume_sources={VOL: COPY}))

    assert VOL not in host.volumes.present() and host.driver.containers == {}
    [rep] = host.server.reports_of(iid)
    assert "does not match" in rep.error and rep.task_done == TaskState.spawning


def test_a_restore_cut_short_by_a_crash_starts_over(host):
    iid = new_id()
    host.volumes.attach(VOL, 16)  # half-filled when the agent died
    (host.state_dir / "restoring").mkdir(parents=True)
    (host.state_dir / "restoring" / VOL).touch()

    host.worker().run(Step.spawn, instance(iid, volumes=[_volume()], volume_sources={VOL: COPY}))

    assert host.transfer.restored == [(COPY.pull, host.volumes.source(VOL))]
    assert host.driver.inspect(iid).running


# --- fenced


def _fenced(host, iid):
    host.server.publish(instance(iid, volumes=[_volume()]))
    agent = host.agent()
    _pass(agent, host)
    host.server.reports.clear()
    fenced = instance(
        iid, power="fenced", task=None, power_state=PowerState.running, volumes=[_volume()]
    )
    host.server.publish(fenced)
    return agent


def test_a_fenced_instance_is_stopped_unplugged_kept_and_reported_once(host):
    iid = new_id()
    agent = _fenced(host, iid)

    _pass(agent, host)
    host.server.publish(*host.server.state.instances)  # a later generation
    host.clock.now += 60
    _pass(agent, host)

    obs = host.driver.inspect(iid)
    assert obs is not None and not obs.running  # kept, with its writable layer
    assert host.plumber.links() == set() and host.plumber.ports == {}
    assert VOL in host.volumes.present()  # the sweep keeps what a fenced instance names
    assert host.files_left(iid)
    assert [(r.power_state, r.fenced) for r in host.server.reports_of(iid)] == [
        (PowerState.shutdown, True)
    ]


def test_a_fenced_instance_whose_container_starts_again_is_stopped_not_plumbed(host):
    iid = new_id()
    agent = _fenced(host, iid)
    _pass(agent, host)
    host.driver.start(iid)  # someone ran `docker start`, or dockerd's restart policy

    host.server.publish(*host.server.state.instances)
    _pass(agent, host)

    assert not host.driver.inspect(iid).running and host.plumber.links() == set()


def test_a_fenced_instance_the_server_drops_is_removed_as_an_orphan(host):
    iid = new_id()
    agent = _fenced(host, iid)
    _pass(agent, host)

    host.server.publish()
    _pass(agent, host)

    assert host.driver.inspect(iid) is None and host.files_left(iid) == []


# --- a host back from the dead


def test_a_host_away_longer_than_the_server_waits_starts_nothing_from_its_cache(host):
    """The server may have evacuated its instances meanwhile: until it answers, the
    cached "running" is not believed; its answer (fenced) is."""
    iid = new_id()
    host.server.publish(instance(iid))
    _pass(host.agent(), host)
    host.driver.stop(iid)  # the host died: its containers stopped, its veths gone
    host.plumber.unplumb(iid)
    contact = host.state_dir / "contact"
    contact.write_text(f"{float(contact.read_text()) - 3600}\n")  # an hour ago

    back = host.agent()
    back.reconcile_once()
    assert not host.driver.inspect(iid).running and host.plumber.links() == set()

    host.server.publish(instance(iid, power="fenced", task=None))
    _pass(back, host)
    assert not host.driver.inspect(iid).running
    assert host.server.reports_of(iid)[-1].fenced


def test_an_agent_restarted_soon_after_its_last_answer_works_from_its_cache(host):
    iid = new_id()
    host.server.publish(instance(iid))
    _pass(host.agent(), host)
    host.driver.stop(iid)

    host.agent().reconcile_once()  # the server is unreachable, but was there just now

    assert host.driver.inspect(iid).running


def test_a_running_agent_cut_off_from_the_server_starts_nothing_until_it_answers(host):
    """A partition, not a restart: the agent keeps running, its instance's container
    dies; past the server's host-down time it may have been evacuated, so the agent
    does not start it from what it last heard; once the server answers, it does."""
    iid = new_id()
    host.server.publish(instance(iid))
    agent = host.agent()
    _pass(agent, host)
    host.server.publish(instance(iid, task=None))  # the server's last word: it runs
    agent.receive(host.server.state)
    heard = agent._wall()
    agent._wall = lambda: heard + 3600  # an hour without answer
    host.driver.stop(iid)  # meanwhile its container died

    agent.reconcile_once()
    assert not host.driver.inspect(iid).running

    host.server.publish(instance(iid, task=None))  # the server answers again
    _pass(agent, host)
    assert host.driver.inspect(iid).running


def test_a_running_agent_keeps_the_time_of_the_servers_answer_in_memory(host):
    """It writes STATE/contact for its next start, and reads it only then: a pass
    costs no file read, and what the file says meanwhile changes nothing."""
    iid = new_id()
    host.server.publish(instance(iid, task=None))
    agent = host.agent()
    _pass(agent, host)
    host.server.publish(instance(iid, task=None))  # the server's last word: it runs
    agent.receive(host.server.state)
    contact = host.state_dir / "contact"
    assert abs(float(contact.read_text()) - agent._wall()) < 60  # written for a restart
    contact.write_text(f"{float(contact.read_text()) - 3600}\n")
    host.driver.stop(iid)
    agent.reconcile_once()
    assert host.driver.inspect(iid).running  # not cut off: it heard the server just now
    assert host.agent()._cut_off()  # a new agent reads the file at its start
