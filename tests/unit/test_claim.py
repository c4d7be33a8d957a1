"""The claim computation shared by create and resize (pure)."""

from hypothesis import given
from hypothesis import strategies as st

from dockyard.scheduler import claim
from dockyard.scheduler.state import HostState


def host(**kw) -> HostState:
    base = dict(
        name="h1", up=True, enabled=True, availability_zone="nova", cores=8, memory_mb=8192,
        disk_gb=100, cpu_allocation_ratio=1.0,
    )  # fmt: skip
    return HostState(**{**base, **kw})


def test_a_create_needs_one_instance_and_one_ip_and_its_figures():
    needs = claim.quota_needs(claim.Shape(vcpus=2, memory_mb=512, dedicated=True))
    assert needs == {"instances": 1, "vcpus": 2, "memory_mb": 512, "dedicated_cores": 2, "ips": 1}


def test_a_resize_needs_only_the_difference_and_a_shrink_frees_quota():
    old, new = claim.Shape(2, 512, dedicated=True), claim.Shape(1, 1024)
    assert claim.quota_needs(new, old) == {"vcpus": -1, "memory_mb": 512, "dedicated_cores": -2}


def test_a_host_full_of_the_instance_itself_still_takes_its_resize():
    # the instance holds all the host's memory: judged without it, the same size fits
    old = claim.Shape(1, 1024)
    full = host(memory_mb=1024, memory_mb_used=1024, vcpus_used=1.0)
    req = claim.request(claim.Shape(1, 1024), "net")
    assert claim.place_new([full], req).host is None
    assert claim.place_resize(full, old, [], req).host is not None


def test_a_resize_that_does_not_fit_says_which_filter_refused():
    placement = claim.place_resize(
        host(memory_mb=1024), claim.Shape(1, 512), [], claim.request(claim.Shape(1, 2048), "n")
    )
    assert placement.host is None and "RamFilter" in placement.rejected


@given(
    own=st.lists(st.integers(0, 7), min_size=1, max_size=4, unique=True),
    others=st.lists(st.integers(0, 7), max_size=4, unique=True),
    grow=st.integers(0, 4),
)
def test_a_pinned_instance_keeps_its_cores_and_gains_the_lowest_free(own, others, grow):
    others = [c for c in others if c not in own]
    state = host(pinned=frozenset(own + others))
    old = claim.Shape(len(own), 256, dedicated=True)
    new = claim.Shape(len(own) + grow, 256, dedicated=True)
    placement = claim.place_resize(state, old, own, claim.request(new, "net"))
    free = [c for c in range(8) if c not in others]
    if len(free) < new.vcpus:
        assert placement.host is None
        return
    assert placement.cores[: len(own)] == own  # no process moves
    gained = placement.cores[len(own) :]
    assert gained == [c for c in free if c not in own][:grow]
    assert not set(placement.cores) & set(others)
