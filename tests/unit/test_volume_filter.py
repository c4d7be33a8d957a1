"""VolumeFilter: an instance with named volumes goes where their data lives, and says so."""

from dockyard.scheduler.filters import VolumeFilter
from dockyard.scheduler.select import select
from dockyard.scheduler.state import HostState, Request


def host(name, **kw):
    base = dict(
        up=True, enabled=True, availability_zone="nova", cores=4, memory_mb=8192, disk_gb=100
    )
    return HostState(name=name, **{**base, **kw})


def test_only_the_volume_host_passes_and_no_volume_host_means_any():
    f = VolumeFilter()
    assert f.passes(host("h1"), Request(vcpus=1, memory_mb=128, volume_host="h1"))
    assert not f.passes(host("h2"), Request(vcpus=1, memory_mb=128, volume_host="h1"))
    assert f.passes(host("h2"), Request(vcpus=1, memory_mb=128))


def test_the_volume_host_wins_over_an_emptier_one():
    hosts = [host("h1", memory_mb_used=6000), host("h2")]
    assert select(hosts, Request(vcpus=1, memory_mb=128)).host.name == "h2"
    assert select(hosts, Request(vcpus=1, memory_mb=128, volume_host="h1")).host.name == "h1"


def test_a_full_volume_host_is_explained_by_name():
    hosts = [host("h1", memory_mb_used=8192), host("h2"), host("h3")]
    req = Request(vcpus=1, memory_mb=128, volume_host="h1")
    placement = select(hosts, req)
    assert placement.host is None
    why = placement.explain(req)
    assert "VolumeFilter rejected 2 of 3 (volume data lives on host h1" in why
    assert "RamFilter rejected 1 of 3" in why
