"""The Docker driver's listing answers from memory only while nothing can have changed
(a real dockerd, root): what another client of the runtime does shows in the next
listing once dockerd's event for it arrived, however long the listing may live."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import docker
import pytest

from dockyard.compute.driver import LABEL, ContainerSpec, container_name
from dockyard.compute.drivers import docker as docker_driver
from dockyard.compute.drivers.docker import DockerDriver
from dockyard.images import rootfs
from tests.drivers.test_contract import IMAGE, dockerd, spec  # noqa: F401 - fixture
from tests.integration.cluster import wait_for

pytestmark = pytest.mark.root


class Watched:
    """The driver with its event stream consumed, as the agent's events thread does."""

    def __init__(self, driver: DockerDriver, url: str) -> None:
        self.driver, self.seen, self.stop = driver, [], threading.Event()
        self.other = docker.APIClient(base_url=url)  # another client of the runtime
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for ev in self.driver.events(self.stop):
            self.seen.append(ev.instance_id)

    def subscribed(self) -> None:
        self.thread.start()
        wait_for(lambda: "" in self.seen, 10, "the event stream")


@pytest.fixture
def watched(dockerd, monkeypatch) -> Iterator[Watched]:  # noqa: F811 - the fixture
    # only events may make a listing stale here, never its age
    monkeypatch.setattr(docker_driver, "LISTING_TTL", 3600.0)
    d = DockerDriver("h1", dockerd.url)
    d.ensure_image(IMAGE, lambda dest: rootfs.build(dest), ["/sbin/init"])
    w = Watched(d, dockerd.url)
    w.subscribed()
    yield w
    w.stop.set()
    for obs in d.list():
        d.destroy(obs.instance_id)


def running(driver: DockerDriver, s: ContainerSpec) -> bool | None:
    """None: not listed."""
    found = [o for o in driver.list() if o.instance_id == s.instance_id]
    return found[0].running if found else None


def test_a_container_stopped_behind_its_back_lists_stopped_once_the_event_came(watched):
    d, s = watched.driver, spec()
    d.create(s)
    d.start(s.instance_id)
    assert running(d, s) is True
    other = watched.other
    other.kill(container_name(s.instance_id))
    # the die event reaches the consumer after the driver took it in: no wait beyond it
    wait_for(lambda: watched.seen.count(s.instance_id) >= 2, 15, "the start and die events")
    assert running(d, s) is False


def test_containers_made_and_removed_behind_its_back_come_and_go_in_the_listing(watched):
    d, s = watched.driver, spec()
    assert running(d, s) is None
    other = watched.other
    labels = {LABEL: s.instance_id, "dockyard.host": "h1"}
    other.create_container(IMAGE, name=container_name(s.instance_id), labels=labels)
    wait_for(lambda: running(d, s) is False, 15, "the container made by another client")
    other.remove_container(container_name(s.instance_id), force=True)
    wait_for(lambda: running(d, s) is None, 15, "the container removed by another client")


def test_a_listing_is_asked_of_dockerd_again_only_after_a_change(watched, monkeypatch):
    d, s = watched.driver, spec()
    calls = []
    real = d.api.containers
    monkeypatch.setattr(d.api, "containers", lambda **kw: calls.append(1) or real(**kw))
    before = d._changes
    d.create(s)
    # its own call counted, then dockerd's create event (taken in on the events thread)
    wait_for(lambda: d._changes >= before + 2, 15, "the create event")
    d.list()
    d.list()
    assert len(calls) == 1  # nothing changed in between
    d.start(s.instance_id)  # its own change: stale at once, before any event
    assert running(d, s) is True and len(calls) == 2


def test_without_the_event_stream_every_listing_asks_dockerd(dockerd, monkeypatch):  # noqa: F811
    d = DockerDriver("h1", dockerd.url)
    calls = []
    real = d.api.containers
    monkeypatch.setattr(d.api, "containers", lambda **kw: calls.append(1) or real(**kw))
    d.list()
    d.list()
    assert len(calls) == 2
