"""The pipeline: filter, weigh, pick, choose cores."""

from __future__ import annotations

from collections.abc import Sequence

from dockyard.scheduler.filters import DEFAULT_FILTERS, Filter
from dockyard.scheduler.state import HostState, Placement, Request
from dockyard.scheduler.weighers import RamWeigher, Weigher


def select(
    hosts: Sequence[HostState],
    req: Request,
    filters: Sequence[Filter] = DEFAULT_FILTERS,
    weighers: Sequence[Weigher] = (RamWeigher(),),
) -> Placement:
    """Choose a host for ``req``; record which filter rejected how many hosts."""
    placement = Placement(host=None, considered=len(hosts))
    survivors = list(hosts)
    for flt in filters:
        kept = [h for h in survivors if flt.passes(h, req)]
        if len(kept) < len(survivors):
            placement.rejected[flt.name] = len(survivors) - len(kept)
        survivors = kept
    if not survivors:
        return placement
    # highest weight wins; ties go to the first host by name, so placement is repeatable
    best = min(survivors, key=lambda h: (-sum(w.weigh(h, req) for w in weighers), h.name))
    placement.host = best
    if req.dedicated:
        placement.cores = pick_cores(best, req.vcpus)
    return placement


def pick_cores(host: HostState, count: int) -> list[int]:
    """The lowest-numbered free cores; the filter has checked there are enough."""
    free = host.free_cores
    if len(free) < count:
        raise ValueError(f"{host.name} has {len(free)} free cores, {count} requested")
    return free[:count]
