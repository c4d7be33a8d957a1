"""Create -> ACTIVE and reachable: Dockyard against `docker run --net=none` + hand plumbing.

Both sides use the same dockerd, image, bridge and probe namespace, and the
same reachability check (ping from the probe). Run as root:

    .venv/bin/python -m bench.create_latency [--count 20]

Prints per-instance medians for 20 sequential creates, the wall time of 20
concurrent creates, and the ratios. Target (issue 2): median overhead under
0.3 s per instance, 20 concurrent in under 2x the baseline's time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dockyard.lab.onehost import OneHost as Cluster  # noqa: E402
from dockyard.lab.procs import run, wait_for  # noqa: E402
from dockyard.network.ipam import mac_for  # noqa: E402


def reachable(cluster: Cluster, ip: str) -> None:
    wait_for(
        lambda: cluster.probe.exec("ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0,
        60,
        f"{ip} to answer",
        interval=0.005,
    )


class Baseline:
    """What an operator would do by hand: docker run, then the same veth plumbing."""

    def __init__(self, cluster: Cluster, image: str) -> None:
        self.cluster, self.image = cluster, image
        self.garp = True  # without it a reused IP keeps a stale neighbour entry for seconds
        self.arpings: list[subprocess.Popen[bytes]] = []
        self.env = {"DOCKER_HOST": cluster.dockerd.url, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def create(self, i: int) -> float:
        c, ip = self.cluster, f"{self.cluster.subnet}.{150 + i}"
        start = time.monotonic()
        cid = subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--net=none",
                "--name",
                f"base{i}",
                "--label",
                "bench=baseline",
                self.image,
                "/sbin/init",
            ],
            check=True,
            capture_output=True,
            text=True,
            env=self.env,
        ).stdout.strip()
        pid = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", cid],
            check=True,
            capture_output=True,
            text=True,
            env=self.env,
        ).stdout.strip()
        host_if, peer = f"bh{i}x{c.tag}", f"bp{i}x{c.tag}"
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer)
        run("ip", "link", "set", peer, "netns", pid)
        run("ip", "link", "set", host_if, "master", c.bridge, "up")
        batch = (
            f"link set {peer} name eth0\nlink set eth0 address {mac_for(ip)}\n"
            f"addr add {ip}/24 dev eth0\nlink set lo up\n"
            f"link set eth0 up\nroute add default via {c.subnet}.1 dev eth0 onlink\n"
        )
        run("nsenter", "-t", pid, "-n", "ip", "-batch", "-", input=batch)
        if self.garp:
            self.arpings.append(
                subprocess.Popen(
                    [
                        "nsenter",
                        "-t",
                        pid,
                        "-n",
                        "arping",
                        "-U",
                        "-c",
                        "1",
                        "-w",
                        "0",
                        "-I",
                        "eth0",
                        ip,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        reachable(c, ip)
        return time.monotonic() - start

    def clean(self) -> None:
        for proc in self.arpings:
            proc.wait()
        self.arpings.clear()
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", "label=bench=baseline"],
            capture_output=True,
            text=True,
            env=self.env,
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, env=self.env)


def dockyard_create(cluster: Cluster, i: int) -> float:
    """POST, then poll the instance every 50 ms as `dockyard server create --wait` does."""
    start = time.monotonic()
    s = cluster.api(
        "POST",
        "/instances",
        json={"name": f"b{i}", "image": "demo", "flavor": "small", "network": "net"},
    )
    wait_for(
        lambda: cluster.api("GET", f"/instances/{s['id']}")["status"] == "ACTIVE",
        60,
        "ACTIVE",
        interval=0.05,
    )
    reachable(cluster, s["ip"])
    return time.monotonic() - start


def dockyard_clean(cluster: Cluster) -> None:
    for inst in cluster.api("GET", "/instances"):
        cluster.api("DELETE", f"/instances/{inst['id']}")
    wait_for(lambda: not cluster.api("GET", "/instances"), 60, "instances to go")


def concurrent(fn, count: int) -> tuple[float, list[float]]:
    start = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        each = list(pool.map(fn, range(count)))
    return time.monotonic() - start, each


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=20)
    n = p.parse_args().count
    cluster = Cluster()
    try:
        cluster.start()
        cluster.cli(
            "network",
            "create",
            "net",
            "--cidr",
            f"{cluster.subnet}.0/24",
            "--bridge",
            cluster.bridge,
            "--pool",
            f"{cluster.subnet}.10-{cluster.subnet}.99",
        )
        cluster.cli("flavor", "create", "small", "--vcpus", "1", "--memory", "128")
        tar = cluster.root / "demo.tar"
        cluster.cli("image", "build-demo", "--output", str(tar))
        image = cluster.cli_json("image", "import", "demo", "--rootfs", str(tar))["ref"]
        dockyard_create(cluster, 999)  # warm-up: the agent imports the image once
        dockyard_clean(cluster)
        base = Baseline(cluster, image)

        seq_base = [base.create(i) for i in range(n)]
        base.clean()
        seq_dy = [dockyard_create(cluster, i) for i in range(n)]
        dockyard_clean(cluster)
        wall_base, _ = concurrent(base.create, n)
        base.clean()
        wall_dy, _ = concurrent(lambda i: dockyard_create(cluster, i), n)
        dockyard_clean(cluster)
    finally:
        cluster.stop()

    mb, md = statistics.median(seq_base), statistics.median(seq_dy)
    print(f"create -> ACTIVE and reachable, {n} instances, same dockerd/image/bridge")
    print(
        f"  sequential median  baseline {mb:.3f} s   dockyard {md:.3f} s   "
        f"overhead {md - mb:+.3f} s   ratio {md / mb:.2f}x"
    )
    print(
        f"  sequential p90     baseline {sorted(seq_base)[int(n * 0.9) - 1]:.3f} s   "
        f"dockyard {sorted(seq_dy)[int(n * 0.9) - 1]:.3f} s"
    )
    print(
        f"  {n} concurrent     baseline {wall_base:.3f} s   dockyard {wall_dy:.3f} s   "
        f"ratio {wall_dy / wall_base:.2f}x"
    )
    print(
        f"  targets: overhead < 0.300 s -> {'met' if md - mb < 0.3 else 'NOT met'}; "
        f"concurrent < 2x -> {'met' if wall_dy / wall_base < 2 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
