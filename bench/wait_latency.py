"""`--wait`: from the agent's report answered to the waiter returning.

A real dockyard-server (subprocess, SQLite) and a fake agent that reports
"spawned" 0.1 s after each create. Measured three ways, alternating rounds:

- ``watch``: the CLI's wait function in this process, following the watch;
- ``poll``: the same with the old 50 ms polling (what servers without the
  watch endpoint get);
- ``cli``: ``dockyard server create NAME --wait`` as a process: until it
  prints "ACTIVE in" (``cli-line``) and until it exits (``cli-exit``, which
  includes printing the table and the interpreter's shutdown).

    .venv/bin/python -m bench.wait_latency [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dockyard.cli import servers  # noqa: E402
from dockyard.cli.client import Api  # noqa: E402
from dockyard.lab.daemons import server  # noqa: E402
from dockyard.lab.procs import cli_command  # noqa: E402

SPAWNED = {"power_state": "running", "task_done": "spawning"}


def setup(http: httpx.Client) -> str:
    """Catalog and one host; returns the host's agent token."""
    http.post(
        "/networks",
        json={
            "name": "net",
            "bridge": "dyt-br0",
            "subnet": {
                "cidr": "198.18.0.0/24",
                "gateway": "198.18.0.1",
                "pools": [{"start": "198.18.0.10", "end": "198.18.0.250"}],
            },
        },
    ).raise_for_status()
    http.post("/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 16}).raise_for_status()
    http.post("/images", json={"name": "img", "source": "docker", "ref": "bb"}).raise_for_status()
    token = http.post("/agent-tokens", json={"host": "h1"}).json()["token"]
    body = {"name": "h1", "cores": 64, "memory_mb": 1 << 20, "disk_gb": 10000}
    http.post("/agent/hosts", json=body, headers=_bearer(token)).raise_for_status()
    return str(token)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def report(http: httpx.Client, agent: str, iid: str) -> float:
    r = http.put(f"/agent/instances/{iid}/state", json=SPAWNED, headers=_bearer(agent))
    r.raise_for_status()
    return time.monotonic()


def in_process(http: httpx.Client, api: Api, agent: str, name: str, mode: str) -> float:
    body = {"name": name, "image": "img", "flavor": "small", "network": "net"}
    iid = http.post("/instances", json=body).json()["id"]
    done: dict[str, Any] = {}

    def waiter() -> None:
        if mode == "watch":
            servers.wait(api, iid, name, timeout=30)
        else:
            servers._poll(api, iid, servers._Seen(name, 30, False))
        done["at"] = time.monotonic()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1 + random.uniform(0, 0.05))  # no phase lock with the 50 ms poll
    reported = report(http, agent, iid)
    t.join(30)
    return float(done["at"]) - reported


def as_process(
    http: httpx.Client, env: dict[str, str], agent: str, name: str
) -> tuple[float, float]:
    cmd = [*cli_command(), "server", "create", name]
    cmd += ["--image", "img", "--flavor", "small", "--network", "net", "--wait"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    iid = None
    while iid is None:  # the agent's view: wait for the instance to be placed here
        found = [i for i in http.get("/instances").json() if i["name"] == name]
        iid = found[0]["id"] if found else None
        time.sleep(0.01)
    time.sleep(0.1 + random.uniform(0, 0.05))
    reported = report(http, agent, iid)
    assert proc.stderr is not None
    for line in proc.stderr:
        if b"ACTIVE in" in line:
            printed = time.monotonic()
            break
    proc.communicate(timeout=30)
    exited = time.monotonic()
    assert proc.returncode == 0
    return printed - reported, exited - reported


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    figures: dict[str, list[float]] = {"watch": [], "poll": [], "cli-line": [], "cli-exit": []}
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp), f"sqlite:///{tmp}/d.db") as srv:
        http = httpx.Client(base_url=srv.url + "/v1", headers=_bearer(srv.admin), timeout=60)
        agent = setup(http)
        api = Api(srv.url, srv.admin)
        env = {**os.environ, "DOCKYARD_URL": srv.url, "DOCKYARD_TOKEN": srv.admin}
        for i in range(args.rounds):
            figures["watch"].append(in_process(http, api, agent, f"w{i}", "watch"))
            figures["poll"].append(in_process(http, api, agent, f"p{i}", "poll"))
            line, exit_ = as_process(http, env, agent, f"c{i}")
            figures["cli-line"].append(line)
            figures["cli-exit"].append(exit_)
    for mode, xs in figures.items():
        xs.sort()
        p90 = xs[int(0.9 * (len(xs) - 1))]
        print(
            f"{mode:8} report answered -> returned: median {statistics.median(xs) * 1000:6.1f} ms"
            f"  p90 {p90 * 1000:6.1f} ms  max {xs[-1] * 1000:6.1f} ms  (n={len(xs)})"
        )


if __name__ == "__main__":
    main()
