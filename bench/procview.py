"""Cost and latency of the per-container /proc view: Dockyard's agent against lxcfs.

Both serve the same containers on the same machine: every instance mounts
Dockyard's view over /proc and lxcfs's files at /lxcfs. Run as root:

    .venv/bin/python -m bench.procview [--counts 1,50,200] [--window 10]

Prints
  * read latency (p50, p99) of /proc/meminfo and /proc/loadavg inside a
    container (its mount namespace and cgroup): Dockyard's view, lxcfs, and
    the host kernel's own files for scale;
  * the serving process's CPU (% of one core) with N containers idle, all
    reading Dockyard's view in a loop, all reading lxcfs in a loop; the reads
    per second they managed; and the oldest view file (is the agent keeping up).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker  # noqa: E402
import httpx  # noqa: E402

from dockyard import cgroups, pki  # noqa: E402
from dockyard.lab.daemons import agent_views  # noqa: E402
from dockyard.lab.lxcfs import lxcfs  # noqa: E402
from dockyard.lab.onehost import OneHost as Cluster  # noqa: E402
from dockyard.lab.procs import free_port, run, wait_for  # noqa: E402

LATENCY = r"""
import ctypes, os, sys, time
pid, tasks, paths, n = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
if pid != "host":
    for t in tasks.split(","):  # join the container's cgroups: lxcfs answers for the reader's
        with open(t, "w") as f:
            f.write(str(os.getpid()))
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    if ctypes.CDLL(None, use_errno=True).setns(fd, 0) != 0:
        raise OSError(ctypes.get_errno(), "setns")
for path in paths:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        with open(path, "rb") as f:
            f.read()
        ts.append(time.perf_counter_ns() - t0)
    ts.sort()
    print(path, ts[n // 2], ts[n * 99 // 100])
"""
READER = (
    "d=$(({start} - $(date +%s))); [ $d -gt 0 ] && sleep $d; n=0; e=0; "
    "while :; do if cat {files} >/dev/null 2>&1; then n=$((n+1)); else e=$((e+1)); fi; "
    "[ $(((n + e) % 20)) = 0 ] && [ $(date +%s) -ge {end} ] && break; done; "
    "echo $n $e > /tmp/reads.{start}"
)
VIEW = "/proc/meminfo /proc/loadavg"
LXCFS = "/lxcfs/proc/meminfo /lxcfs/proc/loadavg"


def cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def latency(target: str, tasks: str, paths: list[str], n: int) -> dict[str, tuple[float, float]]:
    out = run(sys.executable, "-c", LATENCY, target, tasks, ",".join(paths), str(n)).stdout
    return {
        p: (int(a) / 1000, int(b) / 1000) for p, a, b in (ln.split() for ln in out.splitlines())
    }


class Bench:
    def __init__(self, cluster: Cluster, lxcfs_mnt: Path, lxcfs_proc: subprocess.Popen) -> None:
        self.c, self.mnt, self.lxcfs_proc = cluster, lxcfs_mnt, lxcfs_proc
        self.docker = docker.DockerClient(base_url=cluster.dockerd.url)
        self.lxcfs_pid = lxcfs_proc.pid
        self.last_age = 0.0  # the oldest view file seen during the last window, s
        self.ids: list[str] = []

    def grow(self, count: int) -> None:
        def create(i: int) -> str:
            body = {
                "name": f"r{i}",
                "image": "demo",
                "flavor": "reader",
                "network": "net",
                "volumes": [{"host_path": str(self.mnt), "path": "/lxcfs", "read_only": True}],
            }
            return str(self.c.api("POST", "/instances", json=body)["id"])

        with ThreadPoolExecutor(16) as pool:
            self.ids += pool.map(create, range(len(self.ids), count))
        wait_for(self._all_active, 1800, f"{count} instances to be ACTIVE", interval=1)

    def container(self, instance_id: str) -> docker.models.containers.Container:
        return self.docker.containers.get(f"dy-{instance_id}")

    def _all_active(self) -> bool:
        return all(i["status"] == "ACTIVE" for i in self.c.api("GET", "/instances"))

    def window(self, files: str | None, seconds: float) -> tuple[float, float, float, int]:
        """(agent %, lxcfs %, reads/s, failed reads) over one window, a reader in every
        container (its loop counts two files as two reads)."""
        # every reader starts in the same second, after the last one is launched
        start = int(time.time()) + 5 + len(self.ids) // 4
        end = start + int(seconds) + 2
        if files:
            for i in self.ids:
                script = READER.format(start=start, end=end, files=files)
                self.container(i).exec_run(["sh", "-c", script], detach=True)
            if time.time() > start:
                raise RuntimeError("launching the readers took too long; widen the margin")
        time.sleep(max(0.0, start + 1 - time.time()))
        agent, lx = cpu_seconds(self.c.agent_proc.pid), cpu_seconds(self.lxcfs_pid)
        t0, ages = time.monotonic(), []
        while time.monotonic() - t0 < seconds:  # how stale the views get under this load
            time.sleep(min(1.0, seconds - (time.monotonic() - t0)))
            ages.append(self.oldest_view())
        dt = time.monotonic() - t0
        self.last_age = max(ages)
        agent = 100 * (cpu_seconds(self.c.agent_proc.pid) - agent) / dt
        lx = 100 * (cpu_seconds(self.lxcfs_pid) - lx) / dt
        if not files:
            return agent, lx, 0.0, 0
        time.sleep(max(0.0, end + 2 - time.time()))
        counts = [self._reads(i, start) for i in self.ids]
        ok, failed = sum(n for n, _ in counts) * 2, sum(e for _, e in counts) * 2
        return agent, lx, ok / (end - start), failed

    def _reads(self, instance_id: str, start: int) -> tuple[int, int]:
        # read from the container's writable layer; never change it from outside
        attrs = self.c.inspect(instance_id)
        path = Path(attrs["GraphDriver"]["Data"]["UpperDir"]) / "tmp" / f"reads.{start}"
        wait_for(path.exists, 30, f"{instance_id} to finish reading")
        n, e = path.read_text().split()
        return int(n), int(e)

    def oldest_view(self) -> float:
        now = time.time()
        views = (agent_views(self.c.root / "agent") / i / "uptime" for i in self.ids)
        return max(now - p.stat().st_mtime for p in views)


REOPEN = {"DOCKYARD_KEEP_CGROUP_FILES": "0"}
STEPS: list[tuple[str, tuple[str, ...], dict[str, str]]] = [  # name, agent flags, environment
    ("as before", ("--cgroup", "off", "--view-dir", "state"), REOPEN),
    ("+ own weight", ("--view-dir", "state"), REOPEN),
    ("+ views on /run", (), REOPEN),
    ("+ kept files", (), {}),
]
PLAIN = {"shares": 1024, "weight": 100}  # an instance's of one vCPU (drivers/docker.py)
BUSY = "while :; do :; done"


class Saturated:
    """The agent restarted in each STEP while every container spins."""

    def __init__(self, b: Bench, tls: Path, base_args: tuple[str, ...]) -> None:
        self.b, self.c = b, b.c
        ca, _ = pki.ensure_ca(tls)
        cert = pki.ensure_server_cert(tls, ["127.0.0.1"], stem="metrics")
        self.port = free_port()
        # beside the instances, in dockerd's --cgroup-parent: as a lab host's agent runs
        self.cgroup = f"{self.c.dockerd.cgroup_parent}/agent"
        self.args = (*base_args, "--metrics-cert", str(cert.cert), "--metrics-key",
                     str(cert.key), "--metrics-listen", f"127.0.0.1:{self.port}",
                     "--cgroup", self.cgroup)  # fmt: skip
        self.http = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=60)
        self.token = (self.c.root / "server" / "monitoring.token").read_text().strip()
        self.on_run = True
        self.restarted = time.time()

    def spin(self) -> None:
        """A busy loop in every container (they stop with the containers)."""

        def one(i: str) -> None:
            self.b.container(i).exec_run(["sh", "-c", BUSY], detach=True)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, self.b.ids))

    def use(self, flags: tuple[str, ...], env: dict[str, str]) -> None:
        """The agent restarted with ``flags``; the view directories where it writes them
        (an instance's directory under the state dir wins, procfs.view_dir)."""
        self.c.kill_agent(signal.SIGTERM)
        self.on_run = "state" not in flags
        state = self.c.root / "agent" / "instances"
        for i in self.b.ids:
            if self.on_run:
                shutil.rmtree(state / i / "proc", ignore_errors=True)
                (agent_views(self.c.root / "agent") / i).mkdir(parents=True, exist_ok=True)
            else:
                (state / i / "proc").mkdir(parents=True, exist_ok=True)
        started, self.restarted = time.monotonic(), time.time()
        self.c.start_agent(args=(*self.args, *flags), **env)
        if "off" in flags:  # the same place, an instance's weight
            cgroups.place_process(self.cgroup, self.c.agent_proc.pid, **PLAIN)  # type: ignore[union-attr]
        wait_for(self._scraped, 600, "the agent's /metrics", interval=0.5)
        print(f"    restarted; /metrics after {time.monotonic() - started:.1f} s", flush=True)

    def _scraped(self) -> bool:
        try:
            self.scrape()
            return True
        except httpx.HTTPError:
            return False

    def scrape(self) -> float:
        t0 = time.perf_counter()
        r = self.http.get(
            f"https://127.0.0.1:{self.port}/metrics",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        r.raise_for_status()
        return time.perf_counter() - t0

    def ages(self) -> list[float]:
        now = time.time()
        root = agent_views(self.c.root / "agent")
        state = self.c.root / "agent" / "instances"
        views = (root / i if self.on_run else state / i / "proc" for i in self.b.ids)
        return [now - self._written(v / "uptime") for v in views]

    def _written(self, path: Path) -> float:
        """When the agent last wrote ``path``; not yet since its restart: the restart."""
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            return self.restarted

    def window(self, seconds: float) -> tuple[list[float], list[float], float, int]:
        """(view ages, scrape latencies, agent CPU %, agent fds) over ``seconds``."""
        pid = self.c.agent_proc.pid  # type: ignore[union-attr]
        cpu, t0 = cpu_seconds(pid), time.monotonic()
        ages: list[float] = []
        latencies: list[float] = []
        while time.monotonic() - t0 < seconds:
            tick = time.monotonic()
            ages += self.ages()
            latencies.append(self.scrape())
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        dt = time.monotonic() - t0
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return ages, latencies, 100 * (cpu_seconds(pid) - cpu) / dt, fds


def saturated(s: Saturated, n: int, rounds: int, window: float, warm: float) -> None:
    s.b.grow(n)
    s.spin()
    got: dict[str, list[tuple[list[float], list[float], float, int]]] = {}
    for r in range(rounds):
        for name, flags, env in STEPS:
            print(f"  round {r + 1}, {name}", flush=True)  # a failed run keeps what it measured
            s.use(flags, env)
            time.sleep(warm)  # the restart's first passes
            got.setdefault(name, []).append(s.window(window))
            ages, lat, cpu, fds = got[name][-1]
            print(f"    age max {max(ages):.2f} s, scrape max {max(lat):.3f} s, "
                  f"CPU {cpu:.1f} %, fds {fds}", flush=True)  # fmt: skip
    print(f"{n} containers each in a busy loop; {rounds} rounds of {window:.0f} s per step")
    head = ("step", "age p50", "age max", "scrape p50", "scrape p99", "agent CPU", "fds")
    print(f"  {head[0]:<18}" + "".join(f"{h:>12}" for h in head[1:]))
    for name, _, _ in STEPS:
        ages = sorted(a for w in got[name] for a in w[0])
        lat = sorted(x for w in got[name] for x in w[1])
        cpu = statistics.mean(w[2] for w in got[name])
        fds = max(w[3] for w in got[name])
        row = (f"{statistics.median(ages):.2f} s", f"{ages[-1]:.2f} s",
               f"{1000 * statistics.median(lat):.0f} ms",
               f"{1000 * lat[min(len(lat) - 1, len(lat) * 99 // 100)]:.0f} ms",
               f"{cpu:.1f} %", fds)  # fmt: skip
        print(f"  {name:<18}" + "".join(f"{x:>12}" for x in row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--counts", default="1,50,200", help="containers per step")
    p.add_argument("--window", type=float, default=10.0, help="seconds measured per window")
    p.add_argument("--reads", type=int, default=5000, help="reads per latency figure")
    p.add_argument(
        "--agent-tmpfs", action="store_true", help="the agent's state (and views) on a tmpfs"
    )
    p.add_argument("--saturate", action="store_true", help="busy containers, the steps table")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every step (--saturate)")
    p.add_argument("--warm", type=float, default=10.0, help="seconds after a restart (--saturate)")
    a = p.parse_args()
    counts = [int(x) for x in a.counts.split(",")]
    cluster = Cluster()
    try:
        cluster.start()
        cluster.kill_agent()
        if a.agent_tmpfs:
            run("mount", "-t", "tmpfs", "-o", "size=1g", "dyk-agent", str(cluster.root / "agent"))
        base = ("--cpu-allocation-ratio", str(max(counts)))
        cluster.start_agent(args=base)
        s = cluster.subnet
        cluster.cli("network", "create", "net", "--cidr", f"{s}.0/24", "--gateway", f"{s}.1",
                    "--bridge", cluster.bridge, "--pool", f"{s}.10-{s}.250")  # fmt: skip
        cluster.cli("flavor", "create", "reader", "--vcpus", "1", "--memory", "32", "--pids", "64")
        tar = cluster.root / "demo.tar"
        cluster.cli("image", "build-demo", "--output", str(tar))
        cluster.cli("image", "import", "demo", "--rootfs", str(tar))
        with lxcfs(cluster.root) as (mnt, lxcfs_proc):
            b = Bench(cluster, mnt, lxcfs_proc)
            if not a.saturate:
                report(b, counts, a.window, a.reads)
            tls = cluster.root / "tls"  # goes with the cluster
            tls.mkdir(exist_ok=True)
            for n in counts if a.saturate else []:
                saturated(Saturated(b, tls, base), n, a.rounds, a.window, a.warm)
    finally:
        cluster.stop()
        if a.agent_tmpfs:
            run("umount", str(cluster.root / "agent"), check=False)
            shutil.rmtree(cluster.root, ignore_errors=True)


def report(b: Bench, counts: list[str | int], window: float, reads: int) -> None:
    b.grow(1)
    pid = b.c.inspect(b.ids[0])["State"]["Pid"]
    tasks = ",".join(sorted({f"{d}/tasks" for d in map(str, cgroups.of_pid(pid).dirs.values())}))
    b.container(b.ids[0]).exec_run(["cat", "/lxcfs/proc/loadavg"])  # lxcfs starts tracking
    print(f"read latency inside a container, {reads} reads each (microseconds)")
    print(f"  {'file':<26}{'p50':>8}{'p99':>8}")
    rows = {
        "dockyard /proc/meminfo": latency(str(pid), tasks, ["/proc/meminfo"], reads),
        "dockyard /proc/loadavg": latency(str(pid), tasks, ["/proc/loadavg"], reads),
        "lxcfs /proc/meminfo": latency(str(pid), tasks, ["/lxcfs/proc/meminfo"], reads),
        "lxcfs /proc/loadavg": latency(str(pid), tasks, ["/lxcfs/proc/loadavg"], reads),
        "kernel /proc/meminfo": latency("host", "", ["/proc/meminfo"], reads),
        "kernel /proc/loadavg": latency("host", "", ["/proc/loadavg"], reads),
    }
    for name, figures in rows.items():
        p50, p99 = next(iter(figures.values()))
        print(f"  {name:<26}{p50:>8.1f}{p99:>8.1f}")
    print()
    print(f"serving CPU (% of one core) over {window:.0f} s windows; reads/s across all readers")
    head = ("containers", "idle: agent", "view age", "view: agent", "reads/s", "failed",
            "view age", "lxcfs: lxcfs", "reads/s", "failed")  # fmt: skip
    print("  " + "".join(f"{h:>13}" for h in head))
    for n in counts:
        b.grow(int(n))
        idle, _, _, _ = b.window(None, window)
        idle_age = b.last_age
        agent, _, view_rate, view_failed = b.window(VIEW, window)
        view_age = b.last_age
        _, lx, lx_rate, lx_failed = b.window(LXCFS, window)
        row = (n, f"{idle:.1f}", f"{idle_age:.1f} s", f"{agent:.1f}", f"{view_rate:.0f}",
               view_failed, f"{view_age:.1f} s", f"{lx:.1f}", f"{lx_rate:.0f}",
               lx_failed)  # fmt: skip
        print("  " + "".join(f"{x:>13}" for x in row), flush=True)
        if b.lxcfs_proc.poll() is not None:
            print(f"  lxcfs exited with {b.lxcfs_proc.returncode}; its log:")
            print((b.c.root / "lxcfs.log").read_text()[-2000:])
            break


if __name__ == "__main__":
    main()
