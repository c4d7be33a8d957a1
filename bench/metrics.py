"""Cost of the agent's /metrics: agent CPU per container per scrape, scrape latency.

A one-host cloud (dockyard.lab.onehost) with N busybox instances; the agent serves
/metrics over HTTPS (a CA made here) and samples every 5 s as it does by default.
For each N, in alternating rounds of the same length:

    quiet     nobody scrapes: the agent's CPU is its own work (sampling, views)
    scraped   a scrape every --spacing seconds (one at a time, a new TLS connection
              each, as a Prometheus with a 15 s interval per target would send them)

    CPU per container per scrape = (scraped CPU - quiet CPU) / scrapes / N
    latency p50/p99 over every scrape of the scraped rounds (client side, TLS included)

A 15 s interval sends one scrape per 15 s; the rounds send them closer together
(--spacing, default 1 s) to have enough of them to measure, never two at once.
Run as root:

    .venv/bin/python -m bench.metrics [--counts 1,50,200] [--rounds 3] [--window 20]
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from dockyard import pki  # noqa: E402
from dockyard.lab.onehost import OneHost as Cluster  # noqa: E402
from dockyard.lab.procs import wait_for  # noqa: E402

INTERVAL = 15.0  # Prometheus's scrape interval the figures are for


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, cluster: Cluster, ca: Path) -> None:
        self.c = cluster
        self.trust = ssl.create_default_context(cafile=str(ca))
        self.token = (cluster.root / "server" / "monitoring.token").read_text().strip()
        self.ids: list[str] = []
        self.url = ""
        # one client, as Prometheus keeps one; the agent closes every connection (HTTP/1.0),
        # so each scrape still makes a TLS handshake
        self.http = httpx.Client(verify=self.trust, timeout=30)

    def grow(self, count: int) -> None:
        def create(i: int) -> str:
            body = {"name": f"m{i}", "image": "demo", "flavor": "tiny", "network": "net"}
            return str(self.c.api("POST", "/instances", json=body)["id"])

        with ThreadPoolExecutor(8) as pool:
            self.ids += pool.map(create, range(len(self.ids), count))
        wait_for(self._all_active, 1200, f"{count} instances to be ACTIVE", interval=2)
        wait_for(lambda: self._sampled() >= count, 120, f"{count} instances sampled", 1)

    def _all_active(self) -> bool:
        return all(i["status"] == "ACTIVE" for i in self.c.api("GET", "/instances"))

    def _sampled(self) -> int:
        if not self.url:
            sd = self.c.api("GET", "/monitoring/targets")
            agent = [t for t in sd if t["labels"]["job"] == "dockyard-agent"]
            if not agent or agent[0]["labels"]["__scheme__"] != "https":
                return -1
            self.url = f"https://{agent[0]['targets'][0]}/metrics"
        body, _ = self.scrape()
        return body.count("dockyard_instance_running{")

    def scrape(self) -> tuple[str, float]:
        t0 = time.perf_counter()
        r = self.http.get(self.url, headers={"Authorization": f"Bearer {self.token}"})
        r.raise_for_status()
        return r.text, time.perf_counter() - t0

    def window(self, seconds: float, spacing: float | None) -> tuple[float, list[float]]:
        """(agent CPU seconds, scrape latencies) over ``seconds``."""
        pid = self.c.agent_proc.pid  # type: ignore[union-attr]
        start, t0, latencies = cpu_seconds(pid), time.monotonic(), []
        while time.monotonic() - t0 < seconds:
            if spacing is None:
                time.sleep(min(1.0, seconds - (time.monotonic() - t0)))
                continue
            began = time.monotonic()
            latencies.append(self.scrape()[1])
            time.sleep(max(0.0, spacing - (time.monotonic() - began)))
        return cpu_seconds(pid) - start, latencies


def measure(b: Bench, n: int, rounds: int, window: float, spacing: float) -> str:
    quiet, scraped, latencies = [], [], []
    for _ in range(rounds):
        cpu, _ = b.window(window, None)
        quiet.append(cpu)
        cpu, lat = b.window(window, spacing)
        scraped.append((cpu, len(lat)))
        latencies += lat
    extra = sum(c for c, _ in scraped) - sum(quiet)
    scrapes = sum(k for _, k in scraped)
    per = 1000 * extra / scrapes / n
    latencies.sort()
    p50 = 1000 * statistics.median(latencies)
    p99 = 1000 * latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)]
    quiet_pct = 100 * sum(quiet) / (rounds * window)
    per_scrape_ms = 1000 * extra / scrapes
    return (
        f"{n:>5} {per:>12.3f} {per_scrape_ms:>10.1f} {p50:>8.1f} {p99:>8.1f} "
        f"{scrapes:>8} {quiet_pct:>10.1f} {100 * extra / scrapes / INTERVAL:>10.2f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--counts", default="1,50,200", help="instances per step")
    p.add_argument("--rounds", type=int, default=3, help="quiet/scraped pairs per step")
    p.add_argument("--window", type=float, default=20.0, help="seconds per window")
    p.add_argument("--spacing", type=float, default=1.0, help="seconds between scrapes")
    a = p.parse_args()
    counts = [int(x) for x in a.counts.split(",")]
    cluster = Cluster()
    with tempfile.TemporaryDirectory(prefix="dyk-bench-tls-") as tls:
        try:
            cluster.start()
            ca, _ = pki.ensure_ca(Path(tls))
            cert = pki.ensure_server_cert(Path(tls), ["127.0.0.1"], stem="metrics")
            cluster.kill_agent()
            cluster.start_agent(
                args=(
                    "--cpu-allocation-ratio", str(max(counts)),
                    "--metrics-cert", str(cert.cert), "--metrics-key", str(cert.key),
                )
            )  # fmt: skip
            s = cluster.subnet
            cluster.cli("network", "create", "net", "--cidr", f"{s}.0/24", "--gateway", f"{s}.1",
                        "--bridge", cluster.bridge, "--pool", f"{s}.10-{s}.250")  # fmt: skip
            cluster.cli("flavor", "create", "tiny", "--vcpus", "1", "--memory", "32")
            tar = cluster.root / "demo.tar"
            cluster.cli("image", "build-demo", "--output", str(tar))
            cluster.cli("image", "import", "demo", "--rootfs", str(tar))
            report(Bench(cluster, ca), counts, a)
        finally:
            cluster.stop()


def report(b: Bench, counts: list[int], a: argparse.Namespace) -> None:
    print(
        f"agent /metrics over HTTPS; {a.rounds} rounds of {a.window:.0f} s quiet + "
        f"{a.window:.0f} s scraped (one scrape every {a.spacing} s) per step"
    )
    print(
        f"{'N':>5} {'ms CPU/inst':>12} {'ms/scrape':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'scrapes':>8} {'quiet %':>10} {'% @15s':>10}"
    )
    for n in counts:
        b.grow(n)
        print(measure(b, n, a.rounds, a.window, a.spacing), flush=True)
    print("ms CPU/inst: agent CPU per instance per scrape; ms/scrape: per scrape;")
    print("quiet %: the agent's CPU (% of a core) unscraped; % @15s: what scrapes add at 15 s")


if __name__ == "__main__":
    main()
