"""Upgrades the instances do not notice: packets lost while a host's daemons restart.

A one-host lab (``dockyard lab up``) with one instance on the ``lab`` network;
a probe on the datacenter switch pings it every 100 ms (``ping -i 0.1``) while
the host's agent, or its dockerd, is stopped and started again. Each row is
one restart; lost packets x 100 ms is the outage the instance's neighbours saw.

- agent restart: the agent stops and starts (an agent upgrade); dockerd stays.
- dockerd restart, live-restore: dockerd stops and starts with --live-restore
  (what the lab, set-up and join start); the agent keeps running and re-adopts.
- dockerd restart, no live-restore: the same with dockerd's default; its
  containers die with it and the agent starts and re-plumbs them afterwards.

    sudo .venv/bin/python -m bench.upgrades [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from dockyard.lab import lab as labs
from dockyard.lab.outage import pinged_during
from dockyard.lab.procs import wait_for

PING_INTERVAL = 0.1


def restart_agent(state: Path, name: str) -> None:
    labs.host_stop(state, name, dockerd=False)
    labs.host_start(state, name)


def restart_dockerd(state: Path, name: str) -> None:
    """Stop and start the host's dockerd as it runs (with or without live-restore)."""
    lab = labs.Lab.load(state)
    host = lab.host(name)
    host.stop_dockerd()
    host.start_dockerd()
    lab.save()


def dockerd_mode(state: Path, name: str, live_restore: bool) -> None:
    """Not measured: restart dockerd into the mode the next case measures (how a
    dockerd stops depends on the flags it was started with)."""
    lab = labs.Lab.load(state)
    host = lab.host(name)
    if host.extra.get("live_restore", True) != live_restore:
        host.extra["live_restore"] = live_restore
        lab.save()
        restart_dockerd(state, name)


def active_and_answering(lab: labs.Lab, probe_ns: str, name: str, ip: str) -> bool:
    inst = lab.api("GET", f"/instances/{name}")
    if inst["status"] != "ACTIVE" or inst["power_state"] != "running" or inst["task_state"]:
        return False
    r = subprocess.run(["nsenter", f"--net=/run/netns/{probe_ns}", "ping", "-c", "1", "-W", "1",
                        ip], capture_output=True)  # fmt: skip
    return r.returncode == 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="dyk-upgrades-"))
    lab = labs.up(state, 1, ["az1"])
    try:
        name = lab.hosts[0].name
        probe_ns = str(lab.data["probe_ns"])
        body = {"name": "probe-me", "image": "demo", "flavor": "small", "network": "lab"}
        inst = lab.api("POST", "/instances", body)
        ip = inst["ip"]
        wait_for(lambda: active_and_answering(lab, probe_ns, "probe-me", ip), 60, "the instance")
        cases: dict[str, tuple[bool, Callable[[], None]]] = {
            "agent restart": (True, lambda: restart_agent(state, name)),
            "dockerd restart, live-restore": (True, lambda: restart_dockerd(state, name)),
            "dockerd restart, no live-restore": (False, lambda: restart_dockerd(state, name)),
        }
        lost: dict[str, list[int]] = {k: [] for k in cases}
        took: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.rounds):
            for case, (live_restore, action) in cases.items():
                dockerd_mode(state, name, live_restore)
                wait_for(lambda: active_and_answering(lab, probe_ns, "probe-me", ip), 60,
                         f"the instance before {case}")  # fmt: skip
                outage = pinged_during(probe_ns, ip, action, interval=PING_INTERVAL, after=12.0)
                lost[case].append(outage.lost)
                took[case].append(outage.action_seconds)
                wait_for(lambda: active_and_answering(lab, probe_ns, "probe-me", ip), 60,
                         f"the instance after {case}")  # fmt: skip
                print(f"round {r + 1} {case}: {lost[case][-1]} lost", flush=True)
        print(f"\nping every {PING_INTERVAL * 1000:.0f} ms from the switch, {args.rounds} rounds:")
        for case in cases:
            med = statistics.median(lost[case])
            print(f"  {case:34} lost median {med:5.1f} (max {max(lost[case]):3d})"
                  f"  ~{med * PING_INTERVAL:4.1f} s of outage;"
                  f" the restart took {statistics.median(took[case]):.1f} s")  # fmt: skip
    finally:
        labs.down(state)  # keeps only the logs
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
