"""Consistency checks, pure: what should be, what differs, and the samples exported.

    hosts' baselines ─┐
    declared values  ─┴─► expected() ─► host_drift() per host ─► host_drift_samples()
                                                                  (server /metrics)
    desired spec + InstanceSeen ─► instance_drift() ─► instance_drift_samples()
                                                        (agent /metrics)

Where an item's expected value comes from, in order:
    declared   an admin set it (``dockyard host baseline set ITEM=VALUE``)
    required   Dockyard needs it so (a network's bridge up, its uplink enslaved)
    majority   the value most up hosts report; a tie decides nothing (``undecided``):
               with two hosts that disagree nobody can tell which one drifted
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dockyard.model import DesiredInstance, Drift, HostCheck, InstanceDrift

HOST_METRIC = "dockyard_host_drift"
HOST_HELP = "1 per baseline item where the host differs from the cluster's (host check)"
INSTANCE_METRIC = "dockyard_instance_drift"
INSTANCE_HELP = "1 per item where the container differs from its desired spec"
NOT_REPORTED = "(not reported)"
MAX_TEXT = 512  # a Drift's value and expected value (many mounts are cut)
SPEC = "desired spec"
# items whose value Dockyard itself needs, whatever the other hosts say
_REQUIRED_SUFFIX = {".bridge": "up", ".uplink": "enslaved"}


@dataclass(frozen=True)
class Sample:
    """One exposition line: ``name{labels} value``."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Expected:
    value: str | None  # None: a tie, undecided
    source: str
    hosts: int = 0  # up hosts reporting the item


def required(item: str) -> str | None:
    """The value Dockyard needs for ``item`` (network.BRIDGE.bridge: up), or None."""
    if item.startswith("network."):
        for suffix, value in _REQUIRED_SUFFIX.items():
            if item.endswith(suffix):
                return value
    return None


def majority(values: Iterable[str]) -> tuple[str | None, int]:
    """The most common value and how many have it; (None, n) on a tie for first."""
    top = Counter(values).most_common(2)
    if not top:
        return None, 0
    if len(top) == 2 and top[0][1] == top[1][1]:
        return None, top[0][1]
    return top[0]


def expected(
    baselines: Mapping[str, Mapping[str, str]], declared: Mapping[str, str]
) -> dict[str, Expected]:
    """What each item should be, from the up hosts' ``baselines`` (host -> item ->
    value) and the admins' ``declared`` values (which win)."""
    by_item: dict[str, list[str]] = {}
    for baseline in baselines.values():
        for item, value in baseline.items():
            by_item.setdefault(item, []).append(value)
    out: dict[str, Expected] = {}
    for item, values in by_item.items():
        need = required(item)
        if need is not None:
            out[item] = Expected(need, "required", len(values))
            continue
        top, n = majority(values)
        source = f"majority of {len(values)} hosts ({n} agree)" if top is not None else "tie"
        out[item] = Expected(top, source, len(values))
    for item, value in declared.items():
        out[item] = Expected(value, "declared", len(by_item.get(item, [])))
    return out


def host_drift(
    baseline: Mapping[str, str], want: Mapping[str, Expected]
) -> tuple[list[Drift], list[str]]:
    """The items of one host's ``baseline`` that differ from ``want``, and the items
    left undecided (a tie) that the host reports. A declared item the host does not
    report is drift; an item only a majority decided is not judged on a host that
    does not report it (a network it does not plumb)."""
    drift, undecided = [], []
    for item, exp in sorted(want.items()):
        have = baseline.get(item)
        if exp.value is None:
            if have is not None:
                undecided.append(item)
            continue
        if have is None and exp.source != "declared":
            continue
        if have != exp.value:
            value = NOT_REPORTED if have is None else have
            drift.append(Drift(item=item, value=value, expected=exp.value, source=exp.source))
    return drift, undecided


# --- instances


@dataclass(frozen=True)
class InstanceSeen:
    """A running container's real configuration, as the agent reads it (None: not
    read, not judged). ``cpu_weight`` is cpu.shares on cgroup v1, cpu.weight on v2."""

    cgroup_version: int = 1
    memory_bytes: int | None = None  # the cgroup's limit; -1: unlimited
    cpu_weight: int | None = None
    cpu_cap: float | None = None  # cores of CFS quota; 0.0: uncapped
    cpuset: str | None = None  # "0-3,6"
    pids_limit: int | None = None  # -1: unlimited
    mounts: tuple[tuple[str, bool], ...] | None = None  # (target, read only) of the user's
    port_bridge: str | None = None  # the bridge of the port's host end; "": no port
    mac: str | None = None
    ips: tuple[str, ...] | None = None  # the IPv4 addresses inside


def shares_to_weight(shares: int) -> int:
    """cgroup v2's cpu.weight for v1 cpu.shares, as runc converts it."""
    return 1 + ((shares - 2) * 9999) // 262142


def cpu_list(text: str) -> frozenset[int]:
    """ "0-3,6" -> {0, 1, 2, 3, 6}; "" -> empty."""
    cores: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(cores)


def _mounts_text(mounts: Iterable[tuple[str, bool]]) -> str:
    return ",".join(f"{t}{':ro' if ro else ''}" for t, ro in sorted(mounts)) or "(none)"


def _limits(want: DesiredInstance, seen: InstanceSeen) -> Iterable[tuple[str, str, str]]:
    """(item, seen, expected) for the limits that were read."""
    if seen.memory_bytes is not None:
        yield "memory", str(seen.memory_bytes), str(want.memory_mb * 2**20)
    if seen.cpu_weight is not None:
        shares = 1024 * want.vcpus
        w = shares if seen.cgroup_version == 1 else shares_to_weight(shares)
        yield "cpu_shares", str(seen.cpu_weight), str(w)
    if seen.cpu_cap is not None:
        cap = want.limits.cpu_cap if want.limits.cpu_cap is not None and not want.dedicated else 0.0
        if abs(seen.cpu_cap - cap) > 0.001:
            yield "cpu_quota", f"{seen.cpu_cap:g}", f"{cap:g}"
    if seen.cpuset is not None and want.cpuset:
        if cpu_list(seen.cpuset) != frozenset(want.cpuset):
            yield "cpuset", seen.cpuset, ",".join(map(str, sorted(want.cpuset)))
    if seen.pids_limit is not None:
        yield "pids", str(seen.pids_limit), str(want.pids_limit)


def _network(want: DesiredInstance, seen: InstanceSeen) -> Iterable[tuple[str, str, str]]:
    if seen.port_bridge is not None:
        yield "port", seen.port_bridge or "(no port)", want.net.bridge
    if seen.mac is not None:
        yield "mac", seen.mac.lower(), want.net.mac.lower()
    if seen.ips is not None and want.net.ip not in seen.ips:
        yield "ip", ",".join(seen.ips) or "(none)", want.net.ip


def instance_drift(want: DesiredInstance, seen: InstanceSeen) -> list[Drift]:
    """Where the container differs from ``want``: limits (memory, cpu_shares,
    cpu_quota, cpuset, pids), mounts (only the expected ones), network (port on its
    bridge, mac, ip). Items not read (None in ``seen``) are not judged."""
    found = [*_limits(want, seen), *_network(want, seen)]
    if seen.mounts is not None:
        wanted = {(v.path, v.read_only) for v in want.volumes}
        if set(seen.mounts) != wanted:
            found.append(("mounts", _mounts_text(seen.mounts), _mounts_text(wanted)))
    return [
        Drift(item=i, value=v[:MAX_TEXT], expected=e[:MAX_TEXT], source=SPEC)
        for i, v, e in found
        if v != e
    ]


# --- samples for /metrics


def host_drift_samples(checks: Iterable[HostCheck]) -> list[Sample]:
    """dockyard_host_drift{host,az,item} 1 for each drifting baseline item (server)."""
    return [
        Sample(HOST_METRIC, {"host": c.host, "az": c.availability_zone, "item": d.item}, 1.0)
        for c in checks
        for d in c.drift
    ]


def instance_drift_samples(
    host: str,
    az: str,
    drift: Iterable[InstanceDrift],
    projects: Mapping[str, str] | None = None,
) -> list[Sample]:
    """dockyard_instance_drift{instance_id,name,project,host,az,item} 1 for each
    drifting item of each instance (agent). ``projects``: instance id -> project."""
    projects = projects or {}
    return [
        Sample(
            INSTANCE_METRIC,
            {
                "instance_id": i.instance_id,
                "name": i.name,
                "project": projects.get(i.instance_id, ""),
                "host": host,
                "az": az,
                "item": d.item,
            },
            1.0,
        )
        for i in drift
        for d in i.items
    ]
