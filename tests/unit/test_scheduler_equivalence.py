"""The list-at-a-time scheduler chooses exactly what the host-at-a-time one did.

``reference`` below is the pipeline as it was before filters gained ``keep``:
every filter's test written out per host, weights summed per host, the highest
weight and then the first name winning. Any difference in host, cores or the
rejection counts a user reads in a 409 is a behaviour change.
"""

from __future__ import annotations

import dataclasses
import math

from hypothesis import event, given, settings
from hypothesis import strategies as st

from dockyard.scheduler.filters import DEFAULT_FILTERS
from dockyard.scheduler.select import select
from dockyard.scheduler.state import GroupSpec, HostState, Placement, Request
from dockyard.scheduler.weighers import GROUP_WEIGHERS, RamWeigher, Weigher


def _free(h: HostState) -> list[int]:
    return [c for c in range(h.cores) if c not in h.pinned and c not in h.reserved]


def _free_mem(h: HostState) -> float:
    return (h.memory_mb - h.reserved_memory_mb) * h.ram_allocation_ratio - h.memory_mb_used


def _dedicated_fits(h: HostState, r: Request) -> bool:
    remaining = len(_free(h)) - r.vcpus
    return remaining >= 0 and remaining >= math.ceil(h.vcpus_used / h.cpu_allocation_ratio - 1e-9)


REFERENCE_FILTERS = [
    ("ComputeFilter", lambda h, r: h.up and h.enabled),
    ("VolumeFilter", lambda h, r: r.volume_host is None or h.name == r.volume_host),
    (
        "AvailabilityZoneFilter",
        lambda h, r: r.availability_zone is None or h.availability_zone == r.availability_zone,
    ),
    (
        "NetworkFilter",
        lambda h, r: r.network is None or "*" in h.networks or r.network in h.networks,
    ),
    (
        "ServerGroupAntiAffinityFilter",
        lambda h, r: (
            r.group is None or r.group.policy != "anti-affinity" or h.name not in r.group.hosts
        ),
    ),
    (
        "ServerGroupAffinityFilter",
        lambda h, r: (
            r.group is None
            or r.group.policy != "affinity"
            or not r.group.hosts
            or h.name in r.group.hosts
        ),
    ),
    ("RamFilter", lambda h, r: _free_mem(h) >= r.memory_mb),
    (
        "CoreFilter",
        lambda h, r: (
            r.dedicated or h.vcpus_used + r.vcpus <= len(_free(h)) * h.cpu_allocation_ratio + 1e-9
        ),
    ),
    ("DedicatedCoreFilter", lambda h, r: not r.dedicated or _dedicated_fits(h, r)),
    ("RootDiskFilter", lambda h, r: r.disk_gb == 0 or h.root_disk_quota),
    ("DiskFilter", lambda h, r: h.disk_gb_used + r.disk_gb + r.volume_gb <= h.disk_gb),
]


def reference(hosts: list[HostState], req: Request, weighers: list[Weigher]) -> Placement:
    placement = Placement(host=None, considered=len(hosts))
    survivors = list(hosts)
    for name, test in REFERENCE_FILTERS:
        kept = [h for h in survivors if test(h, req)]
        if len(kept) < len(survivors):
            placement.rejected[name] = len(survivors) - len(kept)
        survivors = kept
    if not survivors:
        return placement
    best = min(survivors, key=lambda h: (-sum(w.weigh(h, req) for w in weighers), h.name))
    placement.host = best
    if req.dedicated:
        placement.cores = _free(best)[: req.vcpus]
    return placement


NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
MOSTLY = st.sampled_from([True, True, True, False])  # so several hosts often survive


@st.composite
def host_states(draw: st.DrawFn) -> HostState:
    cores = draw(st.integers(2, 8))
    return HostState(
        name=draw(NAMES),
        up=draw(MOSTLY),
        enabled=draw(MOSTLY),
        availability_zone=draw(st.sampled_from(["az1", "az2"])),
        cores=cores,
        # few distinct sizes, so equal weights (ties broken by name) are common
        memory_mb=draw(st.sampled_from([1024, 2048, 4096])),
        disk_gb=draw(st.integers(0, 60)),
        networks=draw(st.sampled_from([("*",), ("*",), ("net",), ("other",)])),
        vcpus_used=draw(st.sampled_from([0.0, 0.0, 1.0, 2.5, 8.0])),
        memory_mb_used=draw(st.sampled_from([0, 0, 512, 1024])),
        disk_gb_used=draw(st.integers(0, 30)),
        pinned=frozenset(draw(st.lists(st.integers(0, cores - 1), max_size=cores // 2))),
        cpu_allocation_ratio=draw(st.sampled_from([1.0, 2.0, 16.0])),
        ram_allocation_ratio=draw(st.sampled_from([1.0, 1.5])),
        reserved=frozenset(draw(st.lists(st.integers(0, cores - 1), max_size=1))),
        reserved_memory_mb=draw(st.sampled_from([0, 512])),
        root_disk_quota=draw(MOSTLY),
    )


REQUESTS = st.builds(
    Request,
    vcpus=st.integers(1, 3),
    memory_mb=st.sampled_from([1, 512, 1024, 1024, 3000]),
    disk_gb=st.sampled_from([0, 0, 5]),
    dedicated=st.booleans(),
    availability_zone=st.sampled_from([None, None, "az1", "az2"]),
    network=st.sampled_from([None, "net"]),
    volume_host=st.sampled_from([None, None, None, "a"]),
    volume_gb=st.sampled_from([0, 0, 3]),
    group=st.one_of(
        st.none(),
        st.builds(
            GroupSpec,
            name=st.just("web"),
            policy=st.sampled_from(
                ["anti-affinity", "affinity", "soft-anti-affinity", "soft-affinity"]
            ),
            members=st.dictionaries(NAMES, st.integers(0, 2), max_size=3),
        ),
    ),
)
MULTIPLIERS = st.lists(st.sampled_from([1.0, -1.0, 0.0, 2.0]), min_size=0, max_size=2)


@settings(max_examples=400)
@given(st.lists(host_states(), min_size=2, max_size=8), REQUESTS, MULTIPLIERS)
def test_placement_host_cores_and_rejections_match_the_host_at_a_time_pipeline(
    hosts, req, multipliers
):
    weighers = [*(RamWeigher(mu) for mu in multipliers), *GROUP_WEIGHERS]
    got = select(hosts, req, weighers=weighers)
    want = reference(hosts, req, weighers)
    survivors = len(hosts) - sum(want.rejected.values())
    event(f"survivors: {min(survivors, 3)}{'+' if survivors >= 3 else ''}")
    for name in want.rejected:
        event(f"rejects: {name}")
    assert got.rejected == want.rejected and got.considered == want.considered
    assert got.host is want.host  # the same object: db/instances.py finds its row by identity
    assert got.cores == want.cores


@given(host_states(), REQUESTS)
def test_each_filter_passes_a_host_exactly_when_its_keep_keeps_it(h, req):
    assert h.free_cores == _free(h) and h.free_core_count == len(_free(h))
    assert h.free_memory_mb == _free_mem(h)
    for flt in DEFAULT_FILTERS:
        assert flt.passes(h, req) == bool(flt.keep([h], req))  # type: ignore[attr-defined]


class OnlyPasses:
    """A filter written against the Protocol alone (no ``keep``), as a new one may be."""

    name = "OnlyPasses"

    def passes(self, host: HostState, req: Request) -> bool:
        return host.name != "b"


def test_a_filter_without_keep_still_filters_and_is_counted():
    hosts = [HostState(n, True, True, "az1", 2, 1024, 10) for n in ("a", "b", "c")]
    p = select(hosts, Request(vcpus=1, memory_mb=1), filters=[OnlyPasses()])
    assert p.rejected == {"OnlyPasses": 1} and p.host is not None and p.host.name == "a"


def test_derived_figures_follow_the_fields_of_each_copy():
    h = HostState("a", True, True, "az1", 4, 4096, 10, cpu_allocation_ratio=2.0)
    assert (h.free_cores, h.shared_capacity, h.free_memory_mb) == ([0, 1, 2, 3], 8.0, 4096)
    h2 = dataclasses.replace(h, pinned=frozenset({1}), memory_mb_used=1000)
    assert (h2.free_cores, h2.shared_capacity, h2.free_memory_mb) == ([0, 2, 3], 6.0, 3096)
    assert [h.free_core_count, h2.free_core_count] == [4, 3]
    h3 = dataclasses.replace(h, cores=2, pinned=frozenset({1, 5}), reserved=frozenset({0, 7}))
    assert (h3.free_cores, h3.free_core_count) == ([], 0)  # cores beyond the host count for none
    h2.free_cores.append(9)  # a caller's copy: the host's own figures do not change
    assert h2.free_cores == [0, 2, 3]
