"""Where an instance's time goes from POST to answering ping, on a real one-host cloud.

    sudo .venv/bin/python -m bench.spawn_agent [--count 10] [--against TREE]

Starts dockerd, server and agent (dockyard.lab.onehost), the agent with
bench/spawn_trace on its PYTHONPATH, which times its calls on the spawn path (the
long poll's answer, the pass, the step's parts, dockerd's create and start, the
plumbing, the report). Creates ``--count`` instances one after the other through
the API (POST, the instance watch until ACTIVE, then ping from the probe) and prints
the median of each segment. Every process shares CLOCK_MONOTONIC, so the bench's
own times and the agent's line up. ``--against TREE`` runs another source tree's
server and agent in alternation (``git archive main src | tar -x -C TREE``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]

# (label, start event, end event): events are "bench.*" or the agent's "Name.method:s|e"
SEGMENTS = [
    ("POST /instances answered", "bench.post:s", "bench.post:e"),
    ("   server: the POST request", "http POST instances:s", "http POST instances:e"),
    ("   server: the claim (db)", "instances.create:s", "instances.create:e"),
    ("   server: desired built (beside)", "hosts._desired:s", "hosts._desired:e"),
    ("-> long poll answered, parsed", "bench.post:e", "ServerClient.desired:e"),
    ("-> step begins (cache, pass)", "ServerClient.desired:e", "Agent._run_step:s"),
    ("   of which caching it on disk", "Store.save_desired:s", "Store.save_desired:e"),
    ("   of which waking the pass", "Agent.receive:e", "Agent.reconcile_once:s"),
    ("   of which the pass", "Agent.reconcile_once:s", "Agent._run_step:s"),
    ("step: files, view, image", "Worker._spawn:s", "Worker._create:s"),
    ("step: dockerd create", "DockerDriver.create:s", "DockerDriver.create:e"),
    ("step: config files in", "Worker._put_config:s", "Worker._put_config:e"),
    ("step: create -> start call", "DockerDriver.create:e", "DockerDriver.start:s"),
    ("step: dockerd start (+inspect)", "DockerDriver.start:s", "DockerDriver.start:e"),
    ("step: bridge + rules (beside)", "HostPlumber.prepare:s", "HostPlumber.prepare:e"),
    ("step: start -> plumb", "DockerDriver.start:e", "HostPlumber.plumb:s"),
    ("step: veth into the netns", "HostPlumber.plumb:s", "HostPlumber.plumb:e"),
    ("step: tc shape", "HostPlumber.shape:s", "HostPlumber.shape:e"),
    ("step: plumbed -> report sent", "HostPlumber.shape:e", "ServerClient.report:s"),
    ("step: report PUT", "ServerClient.report:s", "ServerClient.report:e"),
    ("   server: the PUT request", "http PUT agent:s", "http PUT agent:e"),
    ("   server: the report (db)", "instances.report:s", "instances.report:e"),
    ("   server: the watch's read", "last._watched:s", "last._watched:e"),
    ("-> watch answers ACTIVE", "ServerClient.report:e", "bench.active:e"),
    ("-> answers ping", "bench.active:e", "bench.ping:e"),
    ("total", "bench.post:s", "bench.ping:e"),
    ("of which dockerd create+start", "DockerDriver.create:s", "DockerDriver.start:e"),
]


def run_one(tree: Path, count: int) -> dict[str, list[float]]:
    """One cloud of ``tree``'s code, ``count`` sequential creates; segment -> seconds."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.spawn_agent", "--one", str(count)],
        cwd=HERE, env={**os.environ, "PYTHONPATH": f"{tree}/src:{HERE}"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"run of {tree} failed:\n{out.stderr[-3000:]}")
    assert f"dockyard from {tree}/src/" in out.stderr, out.stderr[-3000:]
    return dict(json.loads(out.stdout.splitlines()[-1]))


def one(count: int) -> None:
    import httpx

    import dockyard
    from bench.peer import fast_arp, pinged
    from dockyard.lab.onehost import OneHost

    print(f"dockyard from {dockyard.__file__}", file=sys.stderr)
    c = OneHost()
    trace = c.root / "trace.jsonl"
    try:
        tracer = HERE / "bench" / "spawn_trace"  # the server, the agent (and the CLI)
        os.environ.update(PYTHONPATH=f"{tracer}:{os.environ['PYTHONPATH']}",
                          DOCKYARD_TRACE=str(trace))  # fmt: skip
        c.start()
        c.setup_demo()
        fast_arp(c.probe)
        http = httpx.Client(base_url=f"{c.url}/v1", timeout=60,
                            headers={"authorization": f"Bearer {c.admin}"})  # fmt: skip
        marks: list[dict[str, Any]] = []
        for i in range(count + 1):  # the first loads the image: not counted
            marks.append(create(http, c, f"s{i}", pinged))
        print(json.dumps(segments(marks[1:], trace)))
        keep = os.environ.get("DOCKYARD_KEEP_TRACE")  # a file to copy the raw trace to
        if keep:
            Path(keep).write_text(trace.read_text() + json.dumps({"marks": marks}) + "\n")
    finally:
        c.stop()


def create(http: Any, c: Any, name: str, pinged: Any) -> dict[str, Any]:
    body = {"name": name, "image": "demo", "flavor": "small", "network": "net"}
    t0 = time.monotonic()
    inst = http.post("/instances", json=body).raise_for_status().json()
    t1 = time.monotonic()
    version = ""
    while inst["status"] != "ACTIVE":
        r = http.get(f"/instances/{inst['id']}/watch", params={"since": version, "wait": 25})
        out = r.raise_for_status().json()
        version, inst = out["version"], out["instance"]
    t2 = time.monotonic()
    pinged(c.probe, inst["ip"])
    t3 = time.monotonic()
    time.sleep(0.3)  # the agent's after-step pass settles before the next create
    return {"id": inst["id"], "bench.post:s": t0, "bench.post:e": t1,
            "bench.active:e": t2, "bench.ping:e": t3}  # fmt: skip


def segments(marks: list[dict[str, Any]], trace: Path) -> dict[str, list[float]]:
    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    out: dict[str, list[float]] = defaultdict(list)
    for m in marks:
        ev = dict(m)
        _first(ev, calls, m["bench.post:s"], m, SERVER)
        # the long poll's answer that carries it: the first to end after the claim
        claimed = ev.get("instances.create:e", m["bench.post:s"])
        answers = [c["e"] for c in calls if c["n"] == "ServerClient.desired"
                   and claimed <= c["e"] <= m["bench.ping:e"]]  # fmt: skip
        if answers:
            ev["ServerClient.desired:e"] = answers[0]
        _first(ev, calls, ev.get("ServerClient.desired:e", m["bench.post:s"]), m, AGENT)
        watched = [c for c in calls
                   if c["n"] == "instances._watched" and c["e"] <= m["bench.active:e"]]  # fmt: skip
        if watched:
            ev["last._watched:s"], ev["last._watched:e"] = watched[-1]["s"], watched[-1]["e"]
        for label, a, b in SEGMENTS:
            if a in ev and b in ev:
                out[label].append(ev[b] - ev[a])
    return out


SERVER = ("http ", "instances.", "hosts.", "move_steps.")
AGENT = ("Agent.", "Worker.", "DockerDriver.", "HostPlumber.", "Store.", "ProcView.",
         "ServerClient.report")  # fmt: skip


def _first(ev: dict[str, Any], calls: list[dict[str, Any]], after: float, m: dict[str, Any],
           names: tuple[str, ...]) -> None:  # fmt: skip
    """The first call of each name (one of ``names``' prefixes) that starts at or after
    ``after`` and before the ping answered, for this instance or for none in particular."""
    for c in calls:
        if (after - 1e-4 <= c["s"] <= m["bench.ping:e"] and c["k"] in (None, m["id"])
                and c["n"].startswith(names)):  # fmt: skip
            ev.setdefault(f"{c['n']}:s", c["s"])
            ev.setdefault(f"{c['n']}:e", c["e"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--against", type=Path, help="another source tree to alternate with")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(args.one)
    trees = {"this": HERE, **({"against": args.against.resolve()} if args.against else {})}
    seen: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for label, xs in run_one(tree, args.count).items():
                seen[label][name].extend(xs)
    for label, _a, _b in SEGMENTS:
        cells = "  ".join(
            f"{n} {statistics.median(seen[label][n]) * 1000:7.1f} ms" if seen[label][n] else
            f"{n}       -   " for n in trees
        )  # fmt: skip
        print(f"{label:34} {cells}")


if __name__ == "__main__":
    main()
