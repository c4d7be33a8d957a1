from hypothesis import given
from hypothesis import strategies as st

from dockyard.scheduler.select import select
from dockyard.scheduler.state import HostState, Request
from dockyard.scheduler.weighers import RamWeigher


def host(name, **kw):
    base = dict(
        up=True, enabled=True, availability_zone="nova", cores=4, memory_mb=8192, disk_gb=100
    )
    base.update(kw)
    return HostState(name=name, **base)


def test_spreads_by_free_ram_and_packs_when_asked():
    hosts = [host("a", memory_mb_used=4096), host("b", memory_mb_used=1024)]
    req = Request(vcpus=1, memory_mb=512)
    assert select(hosts, req).host.name == "b"
    assert select(hosts, req, weighers=[RamWeigher(-1)]).host.name == "a"


def test_rejections_are_counted_per_filter_and_explained():
    hosts = [
        host("down", up=False),
        host("full", memory_mb_used=8000),
        host("other-az", availability_zone="az2"),
        host("nonet", networks=("prod",)),
    ]
    req = Request(vcpus=1, memory_mb=512, availability_zone="nova", network="demo")
    p = select(hosts, req)
    assert p.host is None
    assert p.rejected == {
        "ComputeFilter": 1,
        "AvailabilityZoneFilter": 1,
        "NetworkFilter": 1,
        "RamFilter": 1,
    }
    text = p.explain(req)
    assert "RamFilter rejected 1 of 4" in text and "512 MB" in text


def test_no_hosts_says_start_an_agent():
    req = Request(vcpus=1, memory_mb=1)
    assert "start a dockyard-agent" in select([], req).explain(req)


def test_dedicated_cores_are_whole_free_cores_lowest_first():
    p = select([host("a", pinned=frozenset({0}))], Request(vcpus=2, memory_mb=1, dedicated=True))
    assert p.cores == [1, 2]
    p = select(
        [host("a", pinned=frozenset({0, 1, 2}))], Request(vcpus=2, memory_mb=1, dedicated=True)
    )
    assert p.host is None and p.rejected == {"DedicatedCoreFilter": 1}


def test_shared_vcpus_respect_allocation_ratio_and_pinned_cores():
    h = host("a", cores=2, pinned=frozenset({0}), vcpus_used=3, cpu_allocation_ratio=4)
    assert select([h], Request(vcpus=1, memory_mb=1)).host is not None
    assert select([h], Request(vcpus=2, memory_mb=1)).rejected == {"CoreFilter": 1}


def test_pinning_does_not_strand_shared_load():
    # 5 shared vCPUs at ratio 4 need 2 cores; pinning 1 of 2 would strand them
    h = host("a", cores=2, vcpus_used=5, cpu_allocation_ratio=4)
    assert select([h], Request(vcpus=1, memory_mb=1, dedicated=True)).host is None


@given(st.lists(st.integers(min_value=0, max_value=7), unique=True), st.integers(1, 8))
def test_chosen_cores_are_never_pinned_already(pinned, want):
    h = host("a", cores=8, pinned=frozenset(pinned))
    p = select([h], Request(vcpus=want, memory_mb=1, dedicated=True))
    if len(pinned) + want <= 8:
        assert len(p.cores) == want and not set(p.cores) & set(pinned)
    else:
        assert p.host is None


def test_reserved_cores_and_memory_are_not_offered():
    h = host(
        "a",
        cores=4,
        reserved=frozenset({0}),
        reserved_memory_mb=1024,
        memory_mb=2048,
        cpu_allocation_ratio=2,
    )
    p = select([h], Request(vcpus=3, memory_mb=1, dedicated=True))
    assert p.cores == [1, 2, 3]
    assert select([h], Request(vcpus=4, memory_mb=1, dedicated=True)).host is None
    assert h.shared_capacity == 6  # 3 free cores x ratio 2
    assert select([h], Request(vcpus=1, memory_mb=1025)).rejected == {"RamFilter": 1}


def test_root_disk_only_where_enforceable_and_the_error_says_why():
    req = Request(vcpus=1, memory_mb=1, disk_gb=10)
    p = select([host("a")], req)
    assert p.rejected == {"RootDiskFilter": 1}
    assert "not enforceable" in p.explain(req)
    assert select([host("a", root_disk_quota=True)], req).host is not None
