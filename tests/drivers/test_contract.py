"""One contract, two drivers: the fake (in memory) and Docker (a real dockerd, root).

Each test states a promise of dockyard.compute.driver.ComputeDriver: what
holds after a call, and what happens when the thing is already there or
already gone.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from dockyard.compute.driver import ContainerSpec
from dockyard.compute.drivers.fake import FakeDriver
from dockyard.errors import PermanentError
from dockyard.images import rootfs
from tests.integration.cluster import private_dockerd, wait_for
from tests.integration.conftest import _can_run

IMAGE = "dockyard-test/contract:1"


@pytest.fixture(scope="module")
def dockerd():
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    with private_dockerd("drv") as d:
        yield d


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.root)])
def driver(request):
    if request.param == "fake":
        d = FakeDriver("h1")
    else:
        from dockyard.compute.drivers.docker import DockerDriver

        d = DockerDriver("h1", request.getfixturevalue("dockerd").url)
    d.ensure_image(IMAGE, lambda dest: rootfs.build(dest), ["/sbin/init"])
    yield d
    for obs in d.list():
        d.destroy(obs.instance_id)


def spec(**kw) -> ContainerSpec:
    base = dict(
        instance_id=str(uuid.uuid4()),
        name="t",
        hostname="t",
        image_ref=IMAGE,
        command=["/sbin/init"],
        vcpus=1,
        cpuset=[],
        memory_mb=64,
        pids_limit=64,
    )
    base.update(kw)
    return ContainerSpec(**base)


def test_create_is_idempotent_and_leaves_a_stopped_container(driver):
    s = spec()
    first = driver.create(s)
    again = driver.create(s)
    assert not first.running and first.instance_id == again.instance_id == s.instance_id
    assert [o.instance_id for o in driver.list()] == [s.instance_id]


def test_start_runs_it_and_start_again_is_a_no_op(driver):
    s = spec()
    driver.create(s)
    a = driver.start(s.instance_id)
    b = driver.start(s.instance_id)
    assert a.running and a.pid > 0 and a.started_at == b.started_at


def test_restart_gives_a_new_start_time(driver):
    s = spec()
    driver.create(s)
    before = driver.start(s.instance_id).started_at
    after = driver.restart(s.instance_id, timeout=1)
    assert after.running and after.started_at != before


def test_stop_and_destroy_are_no_ops_when_already_done(driver):
    s = spec()
    driver.create(s)
    driver.start(s.instance_id)
    driver.stop(s.instance_id, timeout=1)
    driver.stop(s.instance_id, timeout=1)
    assert not driver.inspect(s.instance_id).running
    driver.destroy(s.instance_id)
    driver.destroy(s.instance_id)
    assert driver.inspect(s.instance_id) is None and driver.list() == []


def test_start_of_a_missing_container_is_permanent(driver):
    with pytest.raises(PermanentError):
        driver.start(str(uuid.uuid4()))


def test_missing_image_without_a_source_is_permanent(driver):
    with pytest.raises(PermanentError, match="not on this host"):
        driver.ensure_image("dockyard-test/absent:1", None, None)


def test_events_report_starts_and_deaths(driver):
    """After one "" (subscribed: look afresh), the instance's start and its death."""
    s = spec()
    driver.create(s)
    stop, seen = threading.Event(), []

    def watch():
        for ev in driver.events(stop):
            seen.append((ev.instance_id, ev.action))
            if len(seen) >= 3:
                return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    import time

    time.sleep(0.3)  # let the stream subscribe
    driver.start(s.instance_id)
    driver.stop(s.instance_id, timeout=1)
    wait_for(lambda: len(seen) >= 3, 15, "a start and a die event")
    stop.set()
    assert seen[0] == ("", "")
    assert sorted(seen[1:]) == [(s.instance_id, "die"), (s.instance_id, "start")]
