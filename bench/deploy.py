"""Rolling a 6-replica stack on a 3-host lab: in-place and surge, against making its
instances afresh.

A 3-host lab (``dockyard lab up``); two stacks of ``--replicas`` instances of the demo
image serving http on port 8080 (busybox httpd started by a config file, checked by
an http health check): ``bench/inplace`` (in-place, max-unavailable 2) and
``bench/surge`` (surge, max-surge 2, max-unavailable 0). Each round deploys a new
environment to both, in turn, and measures

- deploy: from the deploy's POST to its status "succeeded" (the server's view);
- serving: (in-place only, whose IPs stay) until every member answers http with the
  new release's page, from a probe on the datacenter switch;
- lowest ready: the fewest ready members sampled every 0.2 s during the deploy;

and, as the baseline in the same run, ``--replicas`` plain instances of the same image
and flavor created at once until every one is ACTIVE (what the deploy's rebuilds cost
when nothing else is in the way).

    sudo .venv/bin/python -m bench.deploy [--rounds 3] [--replicas 6]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dockyard.lab import lab as labs
from dockyard.lab.procs import wait_for

RC_LOCAL = """#!/bin/sh
mkdir -p /www && echo "$APP_MODE" > /www/index.html
httpd -p 8080 -h /www
"""
CHECK = {"kind": "http", "port": 8080, "path": "/index.html", "interval_s": 1}
# run in the probe's namespace: exits when every IP serves the text, printing nothing
SERVING = r"""
import sys, time, urllib.request
want, ips = sys.argv[1], sys.argv[2:]
left = set(ips)
while left:
    for ip in sorted(left):
        try:
            with urllib.request.urlopen(f"http://{ip}:8080/index.html", timeout=1) as r:
                if r.read().decode().strip() == want:
                    left.discard(ip)
        except OSError:
            pass
    time.sleep(0.05)
"""


def stack_body(name: str, replicas: int, surge: bool) -> dict[str, Any]:
    budget = {"strategy": "surge", "max_surge": "2", "max_unavailable": "0"} if surge else {
        "strategy": "in-place", "max_unavailable": "2"}  # fmt: skip
    return {
        "name": name, "image": "demo", "flavor": "small", "network": "lab",
        "replicas": replicas, "env": {"APP_MODE": "r0"}, "health_check": CHECK,
        "files": [{"path": "/etc/rc.local", "content": RC_LOCAL, "mode": 0o755}],
        "progress_deadline_s": 120, **budget,
    }  # fmt: skip


def show(lab: labs.Lab, stack: str) -> Any:
    return lab.api("GET", f"/apps/bench/stacks/{stack}")


def settled(lab: labs.Lab, stack: str, replicas: int) -> bool:
    st = show(lab, stack)
    done = st["deploy"] is None or st["deploy"]["status"] != "running"
    return bool(done and st["ready"] == replicas)


class Lowest:
    """The fewest ready members seen while a deploy runs."""

    def __init__(self, lab: labs.Lab, stack: str) -> None:
        self.lab, self.stack, self.low = lab, stack, 10**6
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.low = min(self.low, show(self.lab, self.stack)["ready"])
            self.stop.wait(0.2)

    def end(self) -> int:
        self.stop.set()
        self.thread.join(30)
        return self.low


def deploy_once(lab: labs.Lab, stack: str, mode: str, probe_ns: str) -> dict[str, float]:
    ips = [m["ip"] for m in show(lab, stack)["instances"]]
    t0 = time.monotonic()
    low = Lowest(lab, stack)
    serving = None
    if stack == "inplace":
        poll = ["nsenter", f"--net=/run/netns/{probe_ns}", sys.executable, "-c", SERVING, mode]
        serving = subprocess.Popen([*poll, *ips])
    d = lab.api("POST", f"/apps/bench/stacks/{stack}/deploys", {"env": {"APP_MODE": mode}})

    def status() -> str:
        return str(show(lab, stack)["deploy"]["status"])

    wait_for(lambda: status() != "running", 600, f"the deploy of {stack}", interval=0.1)
    took = time.monotonic() - t0
    lowest = low.end()
    if status() != "succeeded":
        raise labs.LabError(f"deploy {d['id']} of {stack}: {show(lab, stack)['deploy']}")
    out = {"deploy": took, "lowest ready": float(lowest)}
    if serving is not None:
        serving.wait(300)
        out["serving"] = time.monotonic() - t0
    return out


def create_baseline(lab: labs.Lab, replicas: int, round_no: int) -> float:
    names = [f"plain{round_no}-{i}" for i in range(replicas)]
    t0 = time.monotonic()
    for n in names:
        lab.api("POST", "/instances", {"name": n, "image": "demo", "flavor": "small",
                                        "network": "lab"})  # fmt: skip

    def active() -> bool:
        rows = [i for i in lab.api("GET", "/instances") if i["name"] in names]
        return len(rows) == replicas and all(i["status"] == "ACTIVE" for i in rows)

    wait_for(active, 600, "the plain instances", interval=0.1)
    took = time.monotonic() - t0
    for n in names:
        lab.api("DELETE", f"/instances/{n}")
    wait_for(lambda: not [i for i in lab.api("GET", "/instances") if i["name"] in names], 300,
             "the plain instances to go")  # fmt: skip
    return took


def run(lab: labs.Lab, rounds: int, replicas: int) -> dict[str, list[float]]:
    lab.api("POST", "/apps", {"name": "bench"})
    for stack, surge in (("inplace", False), ("surge", True)):
        lab.api("POST", "/apps/bench/stacks", stack_body(stack, replicas, surge))
    wait_for(lambda: all(settled(lab, s, replicas) for s in ("inplace", "surge")), 600,
             "both stacks ready")  # fmt: skip
    got: dict[str, list[float]] = {}
    for r in range(1, rounds + 1):
        got.setdefault("create afresh", []).append(create_baseline(lab, replicas, r))
        for stack in ("inplace", "surge"):
            figures = deploy_once(lab, stack, f"r{r}", lab.data["probe_ns"])
            for k, v in figures.items():
                got.setdefault(f"{stack} {k}", []).append(v)
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in got.items()), flush=True)
    return got


def report(got: dict[str, list[float]], replicas: int, rounds: int) -> None:
    base = statistics.median(got["create afresh"])
    print(f"\n{replicas} replicas on 3 lab hosts, {rounds} rounds (median; ratio to creating "
          f"{replicas} instances afresh, {base:.1f} s)")  # fmt: skip
    for k, v in got.items():
        med = statistics.median(v)
        ratio = "" if "lowest" in k or k == "create afresh" else f"  {med / base:.2f}x"
        unit = "" if "lowest" in k else " s"
        print(f"  {k:<24}{med:>8.1f}{unit}  (min {min(v):.1f}, max {max(v):.1f}){ratio}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--replicas", type=int, default=6)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="dyk-bench-deploy-"))
    lab = labs.up(state, 3, ["az1"], host_down_after=20)
    try:
        got = run(lab, args.rounds, args.replicas)
    finally:
        labs.down(state)  # keeps only the logs
    report(got, args.replicas, args.rounds)


if __name__ == "__main__":
    main()
