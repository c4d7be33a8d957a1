"""Address allocation within a subnet: pure functions over a subnet spec.

The database guarantees uniqueness (one row per allocated address, unique
per subnet); these functions decide which address to try and whether an
explicit one is acceptable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Set

from dockyard.errors import Conflict, Unprocessable
from dockyard.model import Pool, SubnetCreate

IPv4 = ipaddress.IPv4Address


def validate(spec: SubnetCreate) -> SubnetCreate:
    """Check a subnet spec; fill the gateway (first host) and pool (the rest) if absent."""
    net = ipaddress.IPv4Network(spec.cidr)
    first, last = net.network_address + 1, net.broadcast_address - 1
    gateway = spec.gateway or str(first)
    _inside(net, gateway, "gateway")
    for ip in [*spec.reserved, *spec.dns]:
        _parse(ip, "address")
    for r in spec.reserved:
        _inside(net, r, "reserved address")
    pools = spec.pools or [Pool(start=str(first), end=str(last))]
    for pool in pools:
        start, end = _inside(net, pool.start, "pool start"), _inside(net, pool.end, "pool end")
        if start > end:
            raise Unprocessable(f"pool {pool.start}-{pool.end}: start is after end; swap them")
    return spec.model_copy(update={"gateway": gateway, "pools": pools})


def mac_for(ip: str) -> str:
    """A locally administered unicast MAC derived from the IPv4 address."""
    octets = IPv4(ip).packed
    return "02:00:" + ":".join(f"{b:02x}" for b in octets)


def candidates(spec: SubnetCreate) -> Iterator[str]:
    """Allocatable addresses in order: pools, minus gateway and reserved addresses."""
    excluded = {IPv4(a) for a in [*spec.reserved, spec.gateway] if a}
    for pool in spec.pools:
        current, end = IPv4(pool.start), IPv4(pool.end)
        while current <= end:
            if current not in excluded:
                yield str(current)
            current += 1


def choose(spec: SubnetCreate, taken: Set[str]) -> str | None:
    """The first free address, or None when the pools are exhausted."""
    return next((ip for ip in candidates(spec) if ip not in taken), None)


def check_requested(spec: SubnetCreate, ip: str, taken: Set[str]) -> str:
    """Accept an explicit address or raise Conflict saying why it cannot be had.

    Only addresses of the allocation pools can be asked for, by anyone: what
    lies outside them (routers, hosts, the gateway, reserved addresses) belongs
    to the datacenter, and an instance given one would announce it by ARP. The
    answer for a taken address says only that: not whose it is.
    """
    net = ipaddress.IPv4Network(spec.cidr)
    addr = _parse(ip, "ip")
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise Conflict(f"{ip} is not a usable address of subnet {spec.cidr}; pick one inside it")
    if str(addr) == spec.gateway:
        raise Conflict(f"{ip} is the gateway of subnet {spec.cidr}; pick another address")
    if str(addr) in spec.reserved:
        raise Conflict(f"{ip} is reserved in subnet {spec.cidr}; pick another address")
    if not any(IPv4(p.start) <= addr <= IPv4(p.end) for p in spec.pools):
        pools = ", ".join(f"{p.start}-{p.end}" for p in spec.pools)
        raise Conflict(
            f"{ip} is outside the allocation pools of subnet {spec.cidr} ({pools}); "
            "pick an address inside a pool, or leave the IP out"
        )
    if str(addr) in taken:
        raise Conflict(f"{ip} is already in use in subnet {spec.cidr}; pick another address")
    return str(addr)


def _parse(ip: str, what: str) -> IPv4:
    try:
        return IPv4(ip)
    except ValueError as exc:
        raise Unprocessable(f"{what} {ip!r} is not an IPv4 address") from exc


def _inside(net: ipaddress.IPv4Network, ip: str, what: str) -> IPv4:
    addr = _parse(ip, what)
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise Unprocessable(f"{what} {ip} is not a usable address of {net}")
    return addr
