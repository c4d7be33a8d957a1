"""Server-group policies in the pure scheduler: hard ones filter, soft ones weigh."""

from __future__ import annotations

from dockyard.scheduler.filters import ServerGroupAffinityFilter, ServerGroupAntiAffinityFilter
from dockyard.scheduler.select import select
from dockyard.scheduler.state import GroupSpec, HostState, Request
from dockyard.scheduler.weighers import (
    GROUP_WEIGHERS,
    RamWeigher,
    ServerGroupSoftAffinityWeigher,
    ServerGroupSoftAntiAffinityWeigher,
)

WEIGHERS = (RamWeigher(), *GROUP_WEIGHERS)


def host(name, **kw):
    base = dict(
        up=True, enabled=True, availability_zone="nova", cores=4, memory_mb=8192, disk_gb=100
    )
    return HostState(name=name, **{**base, **kw})


def req(policy=None, members=None, **kw):
    group = GroupSpec("web", policy, members or {}) if policy else None
    return Request(vcpus=1, memory_mb=128, group=group, **kw)


HOSTS = [host("a"), host("b", memory_mb_used=1024), host("c", memory_mb_used=2048)]


def test_anti_affinity_refuses_every_host_that_holds_a_member():
    f = ServerGroupAntiAffinityFilter()
    r = req("anti-affinity", {"a": 1, "b": 1})
    assert [h.name for h in HOSTS if f.passes(h, r)] == ["c"]
    assert select(HOSTS, r, weighers=WEIGHERS).host.name == "c"


def test_anti_affinity_with_every_host_taken_says_so_as_data_and_in_words():
    r = req("anti-affinity", {"a": 1, "b": 1, "c": 1})
    p = select(HOSTS, r, weighers=WEIGHERS)
    assert p.host is None
    assert p.rejected == {"ServerGroupAntiAffinityFilter": 3}
    assert p.reasons(r) == {
        "ServerGroupAntiAffinityFilter": "3 of 3 hosts: anti-affinity: 3 hosts already hold "
        "a member of web"
    }
    assert "anti-affinity: 3 hosts already hold a member of web" in p.explain(r)


def test_affinity_keeps_members_on_the_first_members_host():
    f = ServerGroupAffinityFilter()
    assert all(f.passes(h, req("affinity")) for h in HOSTS)  # the first goes anywhere
    r = req("affinity", {"c": 2})
    assert [h.name for h in HOSTS if f.passes(h, r)] == ["c"]
    assert select(HOSTS, r, weighers=WEIGHERS).host.name == "c"  # not the emptiest, a


def test_affinity_whose_host_is_full_is_refused_naming_the_host():
    hosts = [host("a"), host("b"), host("c", memory_mb_used=8192)]
    r = req("affinity", {"c": 1})
    p = select(hosts, r, weighers=WEIGHERS)
    assert p.host is None
    assert p.rejected == {"ServerGroupAffinityFilter": 2, "RamFilter": 1}
    assert "affinity: the members of web run on c, and only there" in p.explain(r)


def test_hard_filters_ignore_other_policies_and_instances_without_a_group():
    for f in (ServerGroupAntiAffinityFilter(), ServerGroupAffinityFilter()):
        for r in (req(), req("soft-anti-affinity", {"a": 1}), req("soft-affinity", {"b": 1})):
            assert all(f.passes(h, r) for h in HOSTS)


def test_soft_anti_affinity_spreads_while_it_can_then_shares_the_emptiest():
    w = ServerGroupSoftAntiAffinityWeigher()
    r = req("soft-anti-affinity", {"a": 1})
    assert w.weigh(host("a"), r) < w.weigh(host("b"), r) == 0
    # a has most free RAM, but holds a member: b (more RAM than c) gets it
    assert select(HOSTS, r, weighers=WEIGHERS).host.name == "b"
    # every host holds one: the fewest members wins, then free RAM
    r = req("soft-anti-affinity", {"a": 2, "b": 1, "c": 1})
    assert select(HOSTS, r, weighers=WEIGHERS).host.name == "b"
    # never refuses: all taken twice still places
    r = req("soft-anti-affinity", {"a": 2, "b": 2, "c": 2})
    assert select(HOSTS, r, weighers=WEIGHERS).host.name == "a"


def test_soft_affinity_prefers_the_members_host_until_it_is_full():
    r = req("soft-affinity", {"c": 1})
    assert ServerGroupSoftAffinityWeigher().weigh(host("c"), r) > 0
    assert select(HOSTS, r, weighers=WEIGHERS).host.name == "c"
    full = [host("a"), host("b"), host("c", memory_mb_used=8192)]
    assert select(full, r, weighers=WEIGHERS).host.name == "a"  # then by free RAM


def test_one_member_outweighs_any_ram_difference():
    huge = host("huge", memory_mb=64 * 2**20, ram_allocation_ratio=4.0)
    tiny = host("tiny", memory_mb=256)
    r = req("soft-anti-affinity", {"huge": 1})
    assert select([huge, tiny], r, weighers=WEIGHERS).host.name == "tiny"


def test_az_filter_still_applies_to_group_members():
    hosts = [host("a", availability_zone="az1"), host("b", availability_zone="az2")]
    r = req("anti-affinity", {"b": 1}, availability_zone="az2")
    p = select(hosts, r, weighers=WEIGHERS)
    assert p.host is None
    assert p.rejected == {"AvailabilityZoneFilter": 1, "ServerGroupAntiAffinityFilter": 1}
