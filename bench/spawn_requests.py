"""The server's work per create, without the machine's noise: in process, alternated.

    .venv/bin/python -m bench.spawn_requests --against /tmp/main-src --rounds 5

``--against`` names another source tree (``mkdir /tmp/main-src && git archive main
src tests | tar -x -C /tmp/main-src``); each round runs this tree and that one in
fresh processes, one after the other. Each run: a server app on a SQLite file
(``TestClient``, no network), 4 hosts, 20 instances on h1; it times POST
/instances (the 20 creates), a create while the agent's long poll waits (from the
POST sent to the poll's answer, 10 more instances, measured last), the agent's
desired-state read of h1, a report PUT and a watch read (median of 20 each). Printed: the median of
the rounds' medians.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

ONE_RUN = r'''
import statistics, sys, tempfile, time, warnings
warnings.filterwarnings("ignore")
root = sys.argv[1]
sys.path[:0] = [root + "/src", root]
from pathlib import Path
from fastapi.testclient import TestClient
import dockyard
assert dockyard.__file__.startswith(root), dockyard.__file__
from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.db.session import Database
from tests.api.conftest import Cloud
tmp = Path(tempfile.mkdtemp())
db = Database(f"sqlite:///{tmp}/dockyard.db")
token = init(db)
def timed(fn, n=20):
    xs = []
    for _ in range(n):
        s = time.perf_counter(); fn(); xs.append(time.perf_counter() - s)
    return statistics.median(xs) * 1000
with TestClient(create_app(db, tmp)) as client:
    c = Cloud(client, token)
    agent = c.register("h1", cores=8, memory_mb=655360)
    c.catalog()
    for n in range(2, 5):
        c.register(f"h{n}", cores=8, memory_mb=1024)
    ids = iter(range(1000))
    names = []
    def create():
        r = c.create(f"p{next(ids)}"); assert r.status_code == 202, r.text
        names.append(r.json()["id"])
    out = {"post": timed(create)}
    out["desired"] = timed(lambda: c.ok("GET", "/agent/hosts/h1/desired", agent))
    k = iter(range(1000))
    body = {"power_state": "running"}
    out["report"] = timed(lambda: c.ok(
        "PUT", f"/agent/instances/{names[next(k) % 20]}/state", agent, json=body))
    out["watch"] = timed(lambda: c.ok("GET", f"/instances/{names[0]}/watch"))
    import threading
    def woken():  # a create while the agent's long poll waits: POST sent -> poll answered
        gen = c.ok("GET", "/agent/hosts/h1/desired", agent)["generation"]
        done = []
        t = threading.Thread(target=lambda: done.append((c.ok(
            "GET", f"/agent/hosts/h1/desired?since={gen}&wait=25", agent), time.perf_counter())))
        t.start()
        time.sleep(0.05)  # the poll is waiting
        s = time.perf_counter(); create(); t.join()
        return (done[0][1] - s) * 1000
    xs = [woken() for _ in range(10)]
    out["woken"] = statistics.median(xs)
print(" ".join(f"{k}={v:.3f}" for k, v in out.items()))
'''
LABELS = {
    "post": "POST /instances",
    "woken": "POST sent -> long poll answered",
    "desired": "GET desired (20 instances)",
    "report": "PUT report",
    "watch": "GET watch",
}


def one_run(root: Path) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-c", ONE_RUN, str(root)], capture_output=True,
                       text=True, check=True)  # fmt: skip
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", r.stdout.splitlines()[-1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--against", type=Path, help="another source tree to alternate with")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    trees = {"this": HERE, **({"against": args.against.resolve()} if args.against else {})}
    seen: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(args.rounds):
        for name, root in trees.items():
            for key, ms in one_run(root).items():
                seen[key][name].append(ms)
    for key, label in LABELS.items():
        cells = "  ".join(f"{n} {statistics.median(seen[key][n]):7.2f} ms" for n in trees)
        print(f"{label:32} {cells}")


if __name__ == "__main__":
    main()
