import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.errors import Conflict, Unprocessable
from dockyard.model import Pool, SubnetCreate
from dockyard.network import ipam


def subnet(**kw):
    return ipam.validate(SubnetCreate(cidr="198.18.0.0/24", **kw))


def test_defaults_gateway_first_host_and_pool_the_rest():
    s = subnet()
    assert s.gateway == "198.18.0.1"
    assert ipam.choose(s, set()) == "198.18.0.2"


def test_pool_reserved_and_gateway_are_honoured():
    s = subnet(
        gateway="198.18.0.1",
        pools=[Pool(start="198.18.0.10", end="198.18.0.12")],
        reserved=["198.18.0.11"],
    )
    assert list(ipam.candidates(s)) == ["198.18.0.10", "198.18.0.12"]
    assert ipam.choose(s, {"198.18.0.10", "198.18.0.12"}) is None


def test_explicit_ip_outside_taken_gateway_reserved_is_a_conflict():
    s = subnet(reserved=["198.18.0.9"])
    for ip, word in [
        ("198.18.1.5", "not a usable"),
        ("198.18.0.1", "gateway"),
        ("198.18.0.9", "reserved"),
        ("198.18.0.7", "already in use"),
        ("198.18.0.255", "not a usable"),
    ]:
        with pytest.raises(Conflict, match=word):
            ipam.check_requested(s, ip, {"198.18.0.7"})
    assert ipam.check_requested(s, "198.18.0.8", {"198.18.0.7"}) == "198.18.0.8"


def test_explicit_ip_outside_the_pools_is_a_conflict_naming_them():
    s = subnet(
        pools=[
            Pool(start="198.18.0.10", end="198.18.0.20"),
            Pool(start="198.18.0.30", end="198.18.0.40"),
        ]
    )
    for ip in ("198.18.0.2", "198.18.0.9", "198.18.0.21", "198.18.0.29", "198.18.0.254"):
        with pytest.raises(
            Conflict, match="outside the allocation pools .*198.18.0.10-198.18.0.20"
        ):
            ipam.check_requested(s, ip, set())
    for ip in ("198.18.0.10", "198.18.0.20", "198.18.0.30", "198.18.0.40"):
        assert ipam.check_requested(s, ip, set()) == ip


def test_bad_pool_says_what_to_fix():
    with pytest.raises(Unprocessable, match="swap"):
        subnet(pools=[Pool(start="198.18.0.20", end="198.18.0.10")])
    with pytest.raises(Unprocessable, match="not a usable address"):
        subnet(gateway="198.18.5.1")


def test_mac_is_derived_from_ip():
    assert ipam.mac_for("10.15.3.53") == "02:00:0a:0f:03:35"


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=30))
def test_allocations_are_unique_and_inside_the_pool(taken_offsets):
    s = subnet(pools=[Pool(start="198.18.0.10", end="198.18.0.40")])
    taken = {str(ipaddress.IPv4Address("198.18.0.0") + o) for o in taken_offsets}
    got = ipam.choose(s, taken)
    free = [ip for ip in ipam.candidates(s) if ip not in taken]
    assert got == (free[0] if free else None)
    if got:
        assert got not in taken
        assert 10 <= int(got.rsplit(".", 1)[1]) <= 40
