"""Several servers on one PostgreSQL: is an agent polling B woken as fast as one polling A?

Two real dockyard-servers (subprocesses) on a fresh PostgreSQL database, with
the default 1 s re-read. An agent's long poll for its host's desired state is
parked on A (``same``: one server) or on B (``other``: the change travels
through PostgreSQL's NOTIFY); each round creates an instance through A and
times from the create's answer to the parked poll's answer. Alternating rounds.

    .venv/bin/python -m bench.two_servers --pg postgresql+psycopg://USER:PW@HOST/DB [--rounds 30]

(DOCKYARD_TEST_PG_URL is the default for --pg; a database of its own is made
beside the one named and dropped afterwards.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.wait_latency import setup  # noqa: E402
from dockyard.lab.daemons import server  # noqa: E402


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    name = f"dybench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def one(create_via: httpx.Client, poll_on: httpx.Client, agent: str, name: str) -> float:
    """Seconds from the create's answer to the parked long poll's answer."""
    auth = {"authorization": f"Bearer {agent}"}
    generation = poll_on.get("/agent/hosts/h1/desired", headers=auth).json()["generation"]
    answered: dict[str, float] = {}

    def poll() -> None:
        params = {"since": generation, "wait": 20}
        poll_on.get("/agent/hosts/h1/desired", params=params, headers=auth).raise_for_status()
        answered["at"] = time.monotonic()

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.05)  # parked
    body = {"name": name, "image": "img", "flavor": "small", "network": "net"}
    create_via.post("/instances", json=body).raise_for_status()
    created = time.monotonic()
    t.join(30)
    return answered["at"] - created


def p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, int(round(len(s) * 0.9)) - 1)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pg", default=os.environ.get("DOCKYARD_TEST_PG_URL"))
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    if not args.pg:
        raise SystemExit("give --pg URL (a PostgreSQL database this user may create beside)")
    results: dict[str, list[float]] = {"same": [], "other": []}
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.pg) as url:
        a_dir, b_dir = Path(tmp, "a"), Path(tmp, "b")
        a_dir.mkdir()
        b_dir.mkdir()
        with server(a_dir, url) as a:
            (b_dir / "admin.token").write_text(a.admin + "\n")
            with server(b_dir, url) as b:
                auth = {"authorization": f"Bearer {a.admin}"}
                ca = httpx.Client(base_url=f"{a.url}/v1", headers=auth, timeout=60)
                cb = httpx.Client(base_url=f"{b.url}/v1", headers=auth, timeout=60)
                agent = setup(ca)
                for r in range(args.rounds):
                    results["same"].append(one(ca, ca, agent, f"s{r}"))
                    results["other"].append(one(ca, cb, agent, f"o{r}"))
                ca.close()
                cb.close()
    same = statistics.median(results["same"])
    print(f"create through A -> agent's long poll answers, {args.rounds} rounds each:")
    for key, label in (("same", "poll on A (one server)"), ("other", "poll on B (NOTIFY)")):
        xs = results[key]
        med = statistics.median(xs)
        print(f"  {label:24} median {med * 1000:6.1f} ms  p90 {p90(xs) * 1000:6.1f} ms"
              f"  {med / same:5.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
