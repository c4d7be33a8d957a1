"""Moving instances between lab hosts: the downtime their neighbours see.

A two-host lab (``dockyard lab up``). Three measurements:

- migrate: one instance with ``--mb`` MB of random data written into its root
  filesystem and as much into a named volume, cold-migrated to the other host
  while a probe on the datacenter switch pings it every 100 ms. Downtime seen
  from the network (lost pings x 100 ms), the server's own downtime (source
  stopped -> target running) and its split (stop, commit, push, volumes, pull +
  start) from the migration record.
- evacuate: the host of one instance dies (agent and dockerd stopped); once the
  server calls it down, the time from ``evacuate`` to the instance answering
  pings on the other host.
- drain: ``--drain`` instances on one host; the time from ``drain`` until every
  one of them is ACTIVE on the other host.

    sudo .venv/bin/python -m bench.migration [--rounds 3] [--mb 100] [--drain 10]
                                             [--only migrate]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from dockyard.lab import lab as labs
from dockyard.lab.outage import pinged_during
from dockyard.lab.procs import wait_for

PING_INTERVAL = 0.1
SPLIT = ("stop", "commit", "flatten", "push", "volumes", "start")


def answers(probe_ns: str, ip: str) -> bool:
    ping = ["nsenter", f"--net=/run/netns/{probe_ns}", "ping", "-c", "1", "-W", "1", ip]
    return subprocess.run(ping, capture_output=True).returncode == 0


def active_on(lab: labs.Lab, name: str, host: str | None = None) -> bool:
    inst = lab.api("GET", f"/instances/{name}")
    return bool(
        inst["status"] == "ACTIVE"
        and not inst["task_state"]
        and inst["power_state"] == "running"
        and (host is None or inst["host"] == host)
    )


def on_host(lab: labs.Lab, host: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create instances on ``host``: the other hosts are disabled meanwhile."""
    others = [h.name for h in lab.hosts if h.name != host]
    for h in others:
        lab.api("POST", f"/hosts/{h}/disable", {"reason": "bench: placing on " + host})
    try:
        made = [dict(lab.api("POST", "/instances", b)) for b in bodies]
    finally:
        for h in others:
            lab.api("POST", f"/hosts/{h}/enable")
    wait_for(lambda: all(active_on(lab, b["name"]) for b in bodies), 300, "the instances")
    return made


def body(name: str, volume: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": "demo", "flavor": "small", "network": "lab"}
    if volume:
        out["volumes"] = [{"volume": volume, "path": "/data"}]
    return out


def fill(lab: labs.Lab, host: str, iid: str, path: str, mb: int) -> None:
    """``mb`` MB of random data at ``path`` inside the instance, through its host's dockerd."""
    sock = lab.host(host).docker_host
    cmd = ["docker", "-H", sock, "exec", f"dy-{iid}",
           "dd", "if=/dev/urandom", f"of={path}", "bs=1M", f"count={mb}"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)


def migration_of(lab: labs.Lab, name: str) -> dict[str, Any]:
    return dict(lab.api("GET", f"/migrations?instance={name}")[-1])  # oldest first


def finished(lab: labs.Lab, name: str) -> bool:
    m = migration_of(lab, name)
    if m["status"] == "error":
        raise labs.LabError(f"migration of {name} failed: {m['reason']}")
    return bool(m["status"] == "finished")


def migrate_once(lab: labs.Lab, name: str, ip: str, target: str) -> dict[str, Any]:
    probe_ns = str(lab.data["probe_ns"])

    def move() -> None:
        lab.api("POST", f"/instances/{name}/migrate", {"host": target})
        wait_for(lambda: finished(lab, name), 300, f"the migration of {name}")
        wait_for(lambda: answers(probe_ns, ip), 60, f"{name} to answer on {target}")

    outage = pinged_during(probe_ns, ip, move, interval=PING_INTERVAL, after=2.0)
    m = migration_of(lab, name)
    return {"lost_s": outage.seconds, "server_s": m.get("downtime_s") or 0.0,
            "took_s": outage.action_seconds, **(m.get("seconds") or {})}  # fmt: skip


def bench_migrate(lab: labs.Lab, rounds: int, mb: int) -> list[dict[str, Any]]:
    hosts = [h.name for h in lab.hosts]
    lab.api("POST", "/volumes", {"name": "bench-data", "size_mb": max(2 * mb, 64)})
    inst = on_host(lab, hosts[0], [body("mover", "bench-data")])[0]
    fill(lab, hosts[0], inst["id"], "/root/blob", mb)
    fill(lab, hosts[0], inst["id"], "/data/blob", mb)
    rows = []
    for r in range(rounds):
        target = hosts[(r + 1) % 2]
        rows.append(migrate_once(lab, "mover", inst["ip"], target))
        print(f"round {r + 1} migrate -> {target}: " + _row(rows[-1]), flush=True)
    lab.api("DELETE", "/instances/mover")
    wait_for(lambda: not [i for i in lab.api("GET", "/instances") if i["name"] == "mover"], 60,
             "mover to go")  # fmt: skip
    lab.api("DELETE", "/volumes/bench-data")
    return rows


def bench_drain(lab: labs.Lab, count: int) -> float:
    source, target = lab.hosts[0].name, lab.hosts[1].name
    names = [f"drain{i}" for i in range(count)]
    on_host(lab, source, [body(n) for n in names])
    started = time.monotonic()
    lab.api("POST", f"/hosts/{source}/drain")
    wait_for(lambda: all(active_on(lab, n, target) for n in names), 600, f"{source} to drain")
    took = time.monotonic() - started
    lab.api("POST", f"/hosts/{source}/enable")
    for n in names:
        lab.api("DELETE", f"/instances/{n}")
    return took


def bench_evacuate(state: Path, lab: labs.Lab) -> tuple[float, float]:
    """(seconds until the server called the host down, seconds from evacuate to answering)."""
    source, target = lab.hosts[0].name, lab.hosts[1].name
    inst = on_host(lab, source, [body("evacuee")])[0]
    probe_ns = str(lab.data["probe_ns"])
    stopped = time.monotonic()
    labs.host_stop(state, source, dockerd=True)
    wait_for(lambda: source not in lab.hosts_up(), 120, f"{source} to be called down")
    down_s = time.monotonic() - stopped
    started = time.monotonic()
    out = lab.api("POST", f"/hosts/{source}/evacuate")
    if out["unplaced"]:
        raise labs.LabError(f"evacuate placed nothing: {out['unplaced']}")
    try:
        wait_for(lambda: active_on(lab, "evacuee", target), 120, "evacuee on the other host")
    except labs.LabError as exc:
        raise labs.LabError(f"{exc}: {lab.api('GET', '/instances/evacuee')}") from exc
    wait_for(lambda: answers(probe_ns, inst["ip"]), 60, "evacuee to answer")
    took = time.monotonic() - started
    labs.host_start(state, source)
    return down_s, took


def _row(row: dict[str, Any]) -> str:
    split = " ".join(f"{k} {row[k]:.2f}" for k in SPLIT if isinstance(row.get(k), (int, float)))
    return (f"pings lost {row['lost_s']:.1f} s, server downtime {row['server_s']:.2f} s, "
            f"whole move {row['took_s']:.1f} s ({split})")  # fmt: skip


def _median(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = {k for r in rows for k, v in r.items() if isinstance(v, (int, float))}
    return {k: statistics.median(r.get(k, 0.0) for r in rows) for k in keys}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mb", type=int, default=100, help="MB written to the root fs and a volume")
    p.add_argument("--drain", type=int, default=10, help="instances on the drained host")
    p.add_argument("--only", choices=["migrate"], help="skip the drain and the evacuation")
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="dyk-migration-"))
    lab = labs.up(state, 2, ["az1"], host_down_after=15)  # agents beat every 10 s
    try:
        rows = bench_migrate(lab, args.rounds, args.mb)
        print(f"\n{args.mb} MB in the root fs + {args.mb} MB in a volume, ping every "
              f"{PING_INTERVAL * 1000:.0f} ms, {args.rounds} migrations (median):")  # fmt: skip
        print("  migrate: " + _row(_median(rows)))
        if args.only == "migrate":
            return
        drain_s = bench_drain(lab, args.drain)
        down_s, evac_s = bench_evacuate(state, lab)
        print(f"  drain of {args.drain} instances: {drain_s:.1f} s")
        print(f"  evacuate: {evac_s:.1f} s from evacuate to answering on the other host "
              f"(the server called the dead host down {down_s:.1f} s after it died)")  # fmt: skip
    finally:
        labs.down(state)  # keeps only the logs
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
