"""The pipeline: filter, weigh, pick, choose cores."""

from __future__ import annotations

from collections.abc import Sequence

from dockyard.scheduler.filters import DEFAULT_FILTERS, Filter, keep
from dockyard.scheduler.state import REASONS_SHOWN, HostState, Placement, Request
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
        kept = keep(flt, survivors, req)
        if len(kept) < len(survivors):
            placement.rejected[flt.name] = len(survivors) - len(kept)
            if hasattr(flt, "why"):
                kept_ids = {id(h) for h in kept}
                _record_why(placement, flt, [h for h in survivors if id(h) not in kept_ids])
        survivors = kept
    if not survivors:
        return placement
    best = _heaviest(survivors, req, weighers)
    placement.host = best
    if req.dedicated:
        placement.cores = pick_cores(best, req.vcpus)
    return placement


def _heaviest(hosts: Sequence[HostState], req: Request, weighers: Sequence[Weigher]) -> HostState:
    """The highest summed weight wins; ties go to the first host by name, so placement
    is repeatable. Each host is weighed once (this runs for every host on every claim)."""
    weights = [0.0] * len(hosts)
    for w in weighers:
        weigh = w.weigh
        weights = [acc + weigh(h, req) for acc, h in zip(weights, hosts, strict=True)]
    top = max(weights)
    return min((h for h, wt in zip(hosts, weights, strict=True) if wt == top), key=_name)


def _name(host: HostState) -> str:
    return host.name


def _record_why(placement: Placement, flt: Filter, rejected: list[HostState]) -> None:
    """A filter that can say why per host (``why(host)``) names the first few it rejected."""
    why = getattr(flt, "why", None)
    if why is not None:
        placement.named[flt.name] = [str(why(h)) for h in rejected[:REASONS_SHOWN]]


def pick_cores(host: HostState, count: int) -> list[int]:
    """The lowest-numbered free cores; the filter has checked there are enough."""
    free = host.free_cores
    if len(free) < count:
        raise ValueError(f"{host.name} has {len(free)} free cores, {count} requested")
    return free[:count]
