"""The scheduler at many hosts: the pure placement, and the real claim path.

1. ``pure``: ``scheduler.claim.place_new``, with the filters and weighers of a
   create, over ``--hosts`` host states (1,000), ``--placements`` times
   (10,000); each placement consumes the chosen host's memory, shared vCPUs
   or pinned cores and disk, as the claim does. Target:
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
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text

from dockyard import model
from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.db import hosts, identity, instances
from dockyard.db.session import Database
from dockyard.scheduler import claim
from dockyard.scheduler.state import HostState, Placement, Request
from dockyard.scheduler.weighers import GROUP_WEIGHERS, RamWeigher

TARGET_S = 10.0
WEIGHERS = (RamWeigher(), *GROUP_WEIGHERS)  # what db.instances.create weighs with


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


def run_pure(n_hosts: int, n_placements: int, seed: int = 1) -> tuple[list[float], float, int]:
    """Seconds per placement, CPU seconds of them all, and how many found no host."""
    rng = random.Random(seed)
    hosts, reqs = fleet(n_hosts, rng), requests(n_placements, rng)
    where = {h.name: i for i, h in enumerate(hosts)}
    times, refused, cpu = [], 0, 0.0
    for req in reqs:
        cpu -= time.process_time()
        start = time.perf_counter()
        placement = claim.place_new(hosts, req, weighers=WEIGHERS)
        times.append(time.perf_counter() - start)
        cpu += time.process_time()
        if placement.host is None:
            refused += 1
            continue
        i = where[placement.host.name]
        hosts[i] = consume(hosts[i], req, placement)
    return times, cpu, refused


def report_pure(n_hosts: int, n_placements: int) -> None:
    times, cpu, refused = run_pure(n_hosts, n_placements)
    total = sum(times)
    target = TARGET_S * n_placements / 10_000
    print(f"pure scheduler: {n_hosts} hosts, {n_placements} placements ({refused} found no host)")
    print(f"  total {total:.2f} s   target {target:.1f} s   ratio {total / target:.2f}x")
    # CPU time leaves out the time this process waited for a CPU on a busy machine
    print(f"  CPU time {cpu:.2f} s   ratio {cpu / target:.2f}x")
    med, p90 = statistics.median(times) * 1e3, _pct(times, 0.9) * 1e3
    print(f"  per placement: median {med:.3f} ms  p90 {p90:.3f} ms")


# -- 2. the claim path -----------------------------------------------------------------


@contextmanager
def database(pg_url: str | None) -> Iterator[Database]:
    """A fresh, migrated database: SQLite in a temporary directory, or a PostgreSQL
    database of its own on ``pg_url``'s server (dropped afterwards)."""
    with tempfile.TemporaryDirectory(prefix="dybench-") as tmp:
        if pg_url is None:
            db = Database(f"sqlite:///{tmp}/dockyard.db")
            try:
                yield db
            finally:
                db.engine.dispose()
            return
        name = f"dybench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f"CREATE DATABASE {name}"))
        db = Database(pg_url.rsplit("/", 1)[0] + "/" + name)
        try:
            yield db
        finally:
            db.engine.dispose()
            with admin.connect() as c:
                c.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
            admin.dispose()


class Cloud:
    """The API in this process over ``db``, with a catalog and ``n_hosts`` fake hosts."""

    def __init__(self, db: Database, state_dir: Path, n_hosts: int) -> None:
        self.db, self.names = db, [f"host{i:05d}" for i in range(n_hosts)]
        token = init(db)
        assert token is not None
        self.headers = {"authorization": f"Bearer {token}"}
        self.client = TestClient(create_app(db, state_dir))
        with db.session() as s:
            self.admin = identity.authenticate(s, token)
            for name in self.names:  # what POST /v1/agent/hosts does for each agent
                body = {"name": name, "cores": 64, "memory_mb": 1 << 20, "disk_gb": 10_000}
                hosts.register(s, model.HostRegister.model_validate(body))
        self._catalog()
        self.made = 0

    def _catalog(self) -> None:
        subnet = {
            "cidr": "198.18.0.0/16",
            "pools": [{"start": "198.18.1.1", "end": "198.18.250.250"}],
        }
        for path, body in [
            ("/networks", {"name": "net", "bridge": "dyb-br0", "subnet": subnet}),
            ("/flavors", {"name": "small", "vcpus": 1, "memory_mb": 64}),
            ("/images", {"name": "img", "source": "docker", "ref": "bb:latest"}),
        ]:
            self.client.post("/v1" + path, json=body, headers=self.headers).raise_for_status()

    def heartbeat(self) -> None:
        """Keep every fake host up (a host with no heartbeat for 30 s is down)."""
        with self.db.session() as s:
            for name in self.names:
                hosts.heartbeat(s, name)

    def body(self) -> dict[str, str]:
        self.made += 1
        return {"name": f"vm{self.made}", "image": "img", "flavor": "small", "network": "net"}

    def via_api(self) -> None:
        r = self.client.post("/v1/instances", json=self.body(), headers=self.headers)
        assert r.status_code == 202, r.text

    def via_db(self) -> None:
        req = model.InstanceCreate.model_validate(self.body())
        with self.db.session() as s:
            instances.create(s, self.admin, req, uuid.uuid4().hex)

    def rows_view(self) -> None:
        """The hosts as Host rows (what a claim read until claim_view)."""
        with self.db.session(write=False) as s:
            hosts.scheduler_view(s)

    def claim_view(self) -> None:
        with self.db.session(write=False) as s:
            hosts.claim_view(s)

    def floor(self) -> None:
        self.client.get("/v1/flavors", headers=self.headers).raise_for_status()


def timed(fn: Callable[[], None], n: int) -> list[float]:
    """Seconds for each of ``n`` calls."""
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def claim_rates(pg_url: str | None, n_hosts: int, n_claims: int) -> dict[str, list[float]]:
    with database(pg_url) as db, tempfile.TemporaryDirectory() as state:
        cloud = Cloud(db, Path(state), n_hosts)
        with cloud.client:
            fns = {
                "api": cloud.via_api,
                "db": cloud.via_db,
                "floor": cloud.floor,
                "rows": cloud.rows_view,
                "view": cloud.claim_view,
            }
            cloud.heartbeat()
            for fn in fns.values():
                timed(fn, 5)  # warm-up: imports, prepared paths, the pool
            out: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(max(1, n_claims // 10)):  # interleaved: noise falls on all alike
                cloud.heartbeat()  # not timed
                for key, fn in fns.items():
                    out[key] += timed(fn, 10)
            return out


def report_claims(pg_url: str | None, host_counts: Sequence[int], n_claims: int) -> None:
    backend = "PostgreSQL" if pg_url else "SQLite"
    print(f"claim path on {backend}: {n_claims} creates per host count, one at a time")
    print(
        f"  {'hosts':>6} {'API claims/s':>13} {'ms median':>10} {'p90':>7}"
        f" {'db claims/s':>12} {'ms median':>10} {'GET floor ms':>13} {'API vs 10':>10}"
        f" {'view: rows ms':>14} {'columns ms':>11}"
    )
    first: float | None = None
    for n in host_counts:
        t = claim_rates(pg_url, n, n_claims)
        api_rate, db_rate = len(t["api"]) / sum(t["api"]), len(t["db"]) / sum(t["db"])
        first = first or api_rate
        print(
            f"  {n:>6} {api_rate:>13.1f} {statistics.median(t['api']) * 1e3:>10.2f}"
            f" {_pct(t['api'], 0.9) * 1e3:>7.2f} {db_rate:>12.1f}"
            f" {statistics.median(t['db']) * 1e3:>10.2f}"
            f" {statistics.median(t['floor']) * 1e3:>13.2f} {first / api_rate:>9.2f}x"
            f" {statistics.median(t['rows']) * 1e3:>14.2f}"
            f" {statistics.median(t['view']) * 1e3:>11.2f}"
        )


def profile_claim(pg_url: str | None, n_claims: int, n_hosts: int = 1, top: int = 30) -> None:
    """cProfile of ``n_claims`` creates through ``db.instances.create`` (the API's
    handler runs in worker threads, which cProfile does not follow), and the SQL
    statements each one sends."""
    with database(pg_url) as db, tempfile.TemporaryDirectory() as state:
        cloud = Cloud(db, Path(state), n_hosts)
        with cloud.client:
            cloud.heartbeat()
            timed(cloud.via_db, 5)
            statements: list[tuple[str, float]] = []
            started: list[float] = []
            event.listen(db.engine, "before_cursor_execute", lambda *a: started.append(_now()))
            event.listen(
                db.engine,
                "after_cursor_execute",
                lambda *a: statements.append((a[2], _now() - started.pop())),
            )
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n_claims):
                cloud.via_db()
            prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)
    per_claim = len(statements) // n_claims
    print(f"{per_claim} SQL statements per claim; mean ms of each (under the profiler):")
    for i in range(per_claim):
        ms = statistics.mean(t for _, t in statements[i::per_claim]) * 1e3
        print(f"  {ms:7.2f}  " + " ".join(statements[i][0].split())[:110])


def _now() -> float:
    return time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1000, help="host states for the pure scheduler")
    ap.add_argument("--placements", type=int, default=10_000)
    ap.add_argument("--claims", type=int, default=200, help="creates per host count")
    ap.add_argument("--claim-hosts", default="10,100,1000", help="host counts for the claim path")
    ap.add_argument("--pg", metavar="URL", help="also measure the claim path on this PostgreSQL")
    ap.add_argument("--only", choices=["pure", "claim"])
    ap.add_argument(
        "--profile-claim", type=int, metavar="HOSTS", help="cProfile creates with this many hosts"
    )
    args = ap.parse_args()
    if args.profile_claim:
        profile_claim(args.pg, args.claims, args.profile_claim)
        return
    print(f"calib (a fixed Python loop, machine speed now): {calibrate() * 1e3:.1f} ms")
    if args.only != "claim":
        report_pure(args.hosts, args.placements)
    if args.only != "pure":
        counts = [int(n) for n in args.claim_hosts.split(",")]
        report_claims(None, counts, args.claims)
        if args.pg:
            report_claims(args.pg, counts, args.claims)


if __name__ == "__main__":
    main()
