"""The scheduler at many hosts: the pure placement, and the real claim path.

1. ``pure``: ``scheduler.claim.place_new`` over ``--hosts`` host states (1,000),
   ``--placements`` times (10,000); each placement consumes the chosen host's
   memory, shared vCPUs or pinned cores and disk, as the claim does. Target:
   all placements in under 10 s. Prints the total, the per-placement median
   and p90, and the ratio to the target.
2. ``claim``: ``POST /v1/instances`` through the FastAPI app in this process
   (and ``db.instances.create`` directly, without HTTP and auth), against a
   database holding 10, 100 and 1,000 fake hosts (registered with
   ``db.hosts.register``, the agent's registration; no agents run). SQLite in a
   temporary directory, and PostgreSQL with ``--pg URL`` (a database of its own
   is created and dropped). Prints claims per second and the growth against 10
   hosts.

Baselines measured in the same run, so figures from a busy machine can still
be compared: ``calib`` is a fixed pure-Python loop (machine speed), and ``GET
/v1/flavors`` is the cheapest authenticated request (the API's floor).

    .venv/bin/python -m bench.scheduler [--hosts 1000 --placements 10000]
        [--claims 200] [--claim-hosts 10,100,1000] [--pg URL] [--only pure|claim]
    .venv/bin/python -m bench.scheduler --profile-claim   # cProfile of one-host creates
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dockyard.scheduler import claim
from dockyard.scheduler.state import HostState, Placement, Request

TARGET_S = 10.0


# -- baselines -------------------------------------------------------------------------


def calibrate(rounds: int = 5) -> float:
    """Median seconds of a fixed pure-Python loop: how fast this machine is now."""

    def loop() -> float:
        start = time.perf_counter()
        acc = 0
        for i in range(200_000):
            acc += i % 7
        return time.perf_counter() - start

    return statistics.median(loop() for _ in range(rounds))


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. the pure scheduler -------------------------------------------------------------


def fleet(n: int, rng: random.Random) -> list[HostState]:
    """``n`` hosts of mixed sizes over three zones; a few down or disabled, a fifth
    without root disk quotas."""
    out = []
    for i in range(n):
        cores = rng.choice([16, 32, 64, 128])
        out.append(
            HostState(
                name=f"host{i:05d}",
                up=rng.random() > 0.02,
                enabled=rng.random() > 0.01,
                availability_zone=f"az{i % 3}",
                cores=cores,
                memory_mb=cores * 4096,
                disk_gb=cores * 50,
                networks=("*",) if i % 2 else ("net", "lab"),
                reserved=frozenset({0}),
                reserved_memory_mb=2048,
                root_disk_quota=rng.random() > 0.2,
            )
        )
    return out


def requests(n: int, rng: random.Random) -> list[Request]:
    """A mix of shared and pinned flavors, some with a zone, some with a root disk size."""
    shapes = [claim.Shape(1, 512), claim.Shape(2, 2048, 10), claim.Shape(4, 8192, 20)]
    shapes.append(claim.Shape(2, 4096, 0, dedicated=True))
    out = []
    for _ in range(n):
        zone = rng.choice([None, None, "az0", "az1", "az2"])
        out.append(claim.request(rng.choice(shapes), "net", zone))
    return out


def consume(host: HostState, req: Request, placement: Placement) -> HostState:
    """The host after the claim: what ``db.hosts.scheduler_view`` would read next."""
    return dataclasses.replace(
        host,
        vcpus_used=host.vcpus_used + (0 if req.dedicated else req.vcpus),
        memory_mb_used=host.memory_mb_used + req.memory_mb,
        disk_gb_used=host.disk_gb_used + req.disk_gb,
        pinned=host.pinned | set(placement.cores),
    )


def run_pure(n_hosts: int, n_placements: int, seed: int = 1) -> tuple[list[float], int]:
    """Seconds per placement, and how many found no host."""
    rng = random.Random(seed)
    hosts, reqs = fleet(n_hosts, rng), requests(n_placements, rng)
    where = {h.name: i for i, h in enumerate(hosts)}
    times, refused = [], 0
    for req in reqs:
        start = time.perf_counter()
        placement = claim.place_new(hosts, req)
        times.append(time.perf_counter() - start)
        if placement.host is None:
            refused += 1
            continue
        i = where[placement.host.name]
        hosts[i] = consume(hosts[i], req, placement)
    return times, refused


def report_pure(n_hosts: int, n_placements: int) -> None:
    times, refused = run_pure(n_hosts, n_placements)
    total = sum(times)
    target = TARGET_S * n_placements / 10_000
    print(f"pure scheduler: {n_hosts} hosts, {n_placements} placements ({refused} found no host)")
    print(f"  total {total:.2f} s   target {target:.1f} s   ratio {total / target:.2f}x")
    med, p90 = statistics.median(times) * 1e3, _pct(times, 0.9) * 1e3
    print(f"  per placement: median {med:.3f} ms  p90 {p90:.3f} ms")
