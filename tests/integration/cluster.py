"""A one-host Dockyard cluster on this machine, for integration tests (root).

    dockerd  private socket, data root and exec root; --bridge=none --iptables=false
    server   dockyard-server on 127.0.0.1:<free port>, SQLite in a temp dir
    agent    dockyard-agent for host "itest", DOCKER_HOST -> the private dockerd
    bridge   dyt-<hex>, created by the agent on first plumb (or by the probe)
    probe    netns dyp-<hex> with a veth on the bridge, 198.18.<n>.254

Everything is torn down by PID and by name it created, also when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import docker
import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_pid(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Dockerd:
    def __init__(self, root: Path, tag: str) -> None:
        self.root = root
        self.exec_root = Path(f"/run/dyk-{tag}")  # short: unix socket paths are limited
        self.sock = root / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.cgroup_parent = f"dockyard-itest-{tag}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.root / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.exec_root),
                "--host",
                self.url,
                "--pidfile",
                str(self.root / "dockerd.pid"),
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip6tables=false",
                "--cgroup-parent",
                self.cgroup_parent,
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        wait_for(self._ping, 60, "dockerd to answer", interval=0.2)

    def _ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"dockerd exited; see {self.root}/dockerd.log")
        try:
            client = docker.DockerClient(base_url=self.url)
        except docker.errors.DockerException:
            return False
        try:
            return bool(client.ping())
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc, timeout=30)
            self.proc = None
        # a dockerd stopped early in its start leaves its data root mounted on itself
        for mount in reversed(mounts_under(self.root) + mounts_under(self.exec_root)):
            run("umount", "-l", mount, check=False)
        remove_cgroups(self.cgroup_parent)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_dockerd(prefix: str) -> Iterator[Dockerd]:
    """A dockerd of its own, removed afterwards with everything it made."""
    tag = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix=f"dyk-{prefix}-{tag}-"))
    d = Dockerd(root, tag)
    try:
        d.start()
        yield d
    finally:
        d.stop()
        shutil.rmtree(d.exec_root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


class Probe:
    """A network namespace on the bridge: pings instances like a neighbour would."""

    def __init__(self, tag: str, bridge: str, address: str) -> None:
        self.ns, self.bridge, self.address = f"dyp-{tag}", bridge, address
        self.host_if = f"dyq{tag}"

    def start(self) -> None:
        run("ip", "netns", "add", self.ns)
        if not Path("/sys/class/net", self.bridge).exists():
            run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "link", "set", self.bridge, "up")
        run(
            "ip",
            "link",
            "add",
            self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "probe0",
            "netns",
            self.ns,
        )
        run("ip", "link", "set", self.host_if, "master", self.bridge, "up")
        self.exec("ip", "addr", "add", self.address, "dev", "probe0")
        self.exec("ip", "link", "set", "probe0", "up")
        self.exec("ip", "link", "set", "lo", "up")

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns, *cmd, check=check)

    def ping(self, ip: str, count: int = 1) -> bool:
        r = self.exec("ping", "-c", str(count), "-W", "1", ip, check=False)
        return r.returncode == 0

    def stop(self) -> None:
        run("ip", "link", "del", self.host_if, check=False)
        run("ip", "netns", "del", self.ns, check=False)


def remove_cgroups(name: str, fs: Path = Path("/sys/fs/cgroup")) -> None:
    """Remove the (empty, once dockerd and its containers are gone) cgroup ``name`` and
    what is below it, in every hierarchy: a dockerd's --cgroup-parent outlives it."""
    for top in fs.glob(f"*/{name}"):
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True) + [top]:
            try:
                d.rmdir()
            except OSError:
                pass  # still in use, or not empty: left as is


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p.startswith(prefix) or p == prefix.rstrip("/")]


def run(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


class Cluster:
    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.root = Path(tempfile.mkdtemp(prefix=f"dyk-{self.tag}-"))
        self.bridge = f"dyt-{self.tag}"
        self.subnet = f"198.18.{int(self.tag[:2], 16) % 200 + 20}"
        self.dockerd = Dockerd(self.root, self.tag)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_proc: subprocess.Popen | None = None
        self.agent_proc: subprocess.Popen | None = None
        self.probe = Probe(self.tag, self.bridge, f"{self.subnet}.254/24")
        self.admin = ""
        self.docker: docker.DockerClient | None = None

    # --- processes

    def start(self) -> None:
        self.dockerd.start()
        self.docker = docker.DockerClient(base_url=self.dockerd.url)
        self.start_server()
        self.admin = (self.root / "server" / "admin.token").read_text().strip()
        self.env = {
            **os.environ,
            "DOCKYARD_URL": self.url,
            "DOCKYARD_TOKEN": self.admin,
            "DOCKER_HOST": self.dockerd.url,
        }
        token = self.cli("host", "token", "itest").stdout.strip()
        (self.root / "agent.token").write_text(token + "\n")
        self.start_agent()
        self.probe.start()

    def start_server(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.server_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dockyard.api.server",
                "--state-dir",
                str(self.root / "server"),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        wait_for(self._healthy, 30, "the server to answer")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def start_agent(self, wait: bool = True, args: tuple[str, ...] = (), **env: str) -> None:
        log = (self.root / "agent.log").open("ab")
        self.agent_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dockyard.compute.cli",
                "--server",
                self.url,
                "--token-file",
                str(self.root / "agent.token"),
                "--host-name",
                "itest",
                "--state-dir",
                str(self.root / "agent"),
                *args,
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={**os.environ, "DOCKER_HOST": self.dockerd.url, **env},
        )
        if wait:
            wait_for(lambda: self.host_up(), 30, "the agent to register")

    def host_up(self) -> bool:
        try:
            hosts = self.api("GET", "/hosts")
        except httpx.TransportError:
            return False
        return any(h["name"] == "itest" and h["state"] == "up" for h in hosts)

    def kill_agent(self, sig: int = signal.SIGKILL) -> None:
        assert self.agent_proc is not None
        stop_pid(self.agent_proc, sig)

    def stop(self) -> None:
        try:
            for inst in self.api("GET", "/instances"):
                self.api("DELETE", f"/instances/{inst['id']}", check=False)
            wait_for(lambda: not self.api("GET", "/instances"), 30, "instances to go")
        except Exception:
            pass
        for proc in (self.agent_proc, self.server_proc):
            if proc is not None:
                stop_pid(proc)
        if self.docker is not None:
            for c in self.docker.containers.list(all=True):
                c.remove(force=True)
            self.docker.close()
        self.dockerd.stop()
        self.probe.stop()
        self._drop_port_rules()
        for name in self.links():
            run("ip", "link", "del", name, check=False)
        run("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.dockerd.exec_root, ignore_errors=True)
        keep = os.environ.get("DOCKYARD_KEEP_LOGS")  # a directory to copy the logs to
        if keep:
            for log in self.root.glob("*.log"):
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(log, Path(keep) / f"{self.tag}-{log.name}")
        shutil.rmtree(self.root, ignore_errors=True)

    def _drop_port_rules(self) -> None:
        """The anti-spoofing rules of this cluster's ports, if its agent died before
        removing them (with the last port, the table and the bridge's iptables rule)."""
        if shutil.which("nft") is None:
            return
        from dockyard.network import firewall

        for key in self.instance_link_keys():
            try:
                firewall.remove_port("dy" + key)
            except Exception as exc:  # cleanup goes on; the log says what stayed
                print(f"could not remove the nft rules of dy{key}: {exc}", file=sys.stderr)

    # --- helpers

    def api(self, method: str, path: str, check: bool = True, **kw: Any) -> Any:
        r = httpx.request(
            method,
            f"{self.url}/v1{path}",
            timeout=30,
            headers={"authorization": f"Bearer {self.admin}"},
            **kw,
        )
        if check:
            assert r.status_code < 300, r.text
        return r.json() if r.content else None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [sys.executable, "-m", "dockyard.cli.main", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=180,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"dockyard {' '.join(args)} failed: {r.stderr}")
        return r

    def create(self, name: str, *extra: str, flavor: str = "small", image: str = "demo") -> Any:
        """`dockyard server create NAME --wait` on the test network."""
        return self.cli_json(
            "server", "create", name, "--image", image, "--flavor", flavor, "--network", "net",
            "--wait", *extra,
        )  # fmt: skip

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-f", "json").stdout)

    def links(self) -> list[str]:
        """The host's dy/dz/dw links of this cluster's instances (deleted ones included).

        Other clusters, a demo cloud or a user's instances on the same machine have
        links of the same shape; they are not this cluster's to count or delete.
        """
        ours = self.instance_link_keys()
        out = json.loads(run("ip", "-j", "link", "show").stdout)
        return [
            link["ifname"]
            for link in out
            if link["ifname"].startswith(("dy", "dz", "dw"))
            and len(link["ifname"]) == 13
            and link["ifname"][2:] in ours
        ]

    def instance_link_keys(self) -> set[str]:
        """The 11 hex digits each instance's link names carry, for every instance ever
        created in this cluster's database."""
        db = self.root / "server" / "dockyard.db"
        if not db.exists():
            return set()
        with closing(sqlite3.connect(db, timeout=30)) as conn:
            ids = [row[0] for row in conn.execute("SELECT id FROM instances")]
        return {i.replace("-", "")[:11] for i in ids}

    def container(self, instance_id: str):
        assert self.docker is not None
        return self.docker.containers.get(f"dy-{instance_id}")

    def containers(self) -> list[str]:
        assert self.docker is not None
        return [c.name for c in self.docker.containers.list(all=True)]

    def agent_files(self) -> list[str]:
        d = self.root / "agent" / "instances"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []
