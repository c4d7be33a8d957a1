"""What one request costs the server: its CPU time per call, on a live one-host cloud.

    .venv/bin/python -m bench.request_cpu [--instances 10] [--calls 200] [--rounds 2]

Starts a one-host cloud (dockyard.lab.onehost, as bench/peer.py's Dockyard: server,
agent, private dockerd, SQLite), creates ``--instances`` instances, then calls each
request kind ``--calls`` times one after the other over one kept-open connection and
prints, per kind, the wall time per call and the server process's CPU per call (user +
system from /proc/PID/stat, so the server's threads and the event loop are all in it;
the agent's own calls in the same time land there too, a few per second). The kinds
are the calls an instance's spawn makes (the agent's desired state and report, a
watch) and a few reads the CLI makes, with /healthz as the framework's floor (no
authentication, no database).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peer import Dockyard, build_rootfs  # noqa: E402
from dockyard.lab.onehost import HOST  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kinds(dy: Dockyard) -> dict[str, Callable[[], httpx.Response]]:
    c = dy.cluster
    user = httpx.Client(base_url=c.url, headers={"authorization": f"Bearer {c.admin}"})
    token = (c.root / "agent.token").read_text().strip()
    agent = httpx.Client(base_url=c.url, headers={"authorization": f"Bearer {token}"})
    ids = [i["id"] for i in user.get("/v1/instances").raise_for_status().json()]
    running = {"power_state": "running"}
    return {
        "GET /healthz (no auth, no db)": lambda: user.get("/healthz"),
        "GET /v1/flavors": lambda: user.get("/v1/flavors"),
        "GET /v1/instances/ID": lambda: user.get(f"/v1/instances/{ids[0]}"),
        "GET /v1/instances/ID/watch": lambda: user.get(f"/v1/instances/{ids[0]}/watch"),
        "GET /v1/instances": lambda: user.get("/v1/instances"),
        "GET agent desired state": lambda: agent.get(f"/v1/agent/hosts/{HOST}/desired"),
        "PUT agent report (no change)": lambda: agent.put(
            f"/v1/agent/instances/{ids[1]}/state", json=running
        ),
    }


def measure(pid: int, fn: Callable[[], httpx.Response], calls: int) -> tuple[float, float]:
    """(wall, server CPU) per call, in ms."""
    fn().raise_for_status()
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    for _ in range(calls):
        r = fn()
    r.raise_for_status()
    return (time.perf_counter() - t0) / calls * 1000, (cpu_seconds(pid) - c0) / calls * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instances", type=int, default=10)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    dy = Dockyard()
    seen: dict[str, list[tuple[float, float]]] = {}
    try:
        dy.start(build_rootfs(Path(tempfile.mkdtemp()) / "rootfs.tar"))
        for i in range(args.instances):
            dy.via_api(i)
        time.sleep(1)  # the agent's after-step passes settle
        todo = kinds(dy)
        pid = dy.cluster.server_proc.pid
        for _ in range(args.rounds):
            for name, fn in todo.items():
                seen.setdefault(name, []).append(measure(pid, fn, args.calls))
    finally:
        dy.stop()
    print(f"{args.instances} instances on the host; {args.calls} calls per kind, "
          f"median of {args.rounds} rounds")  # fmt: skip
    print(f"{'request':32} {'wall ms':>8} {'server CPU ms':>14}")
    for name, xs in seen.items():
        wall = statistics.median(x for x, _ in xs)
        cpu = statistics.median(y for _, y in xs)
        print(f"{name:32} {wall:8.2f} {cpu:14.2f}")


if __name__ == "__main__":
    main()
