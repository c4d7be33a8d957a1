"""A one-host Dockyard cloud in the ROOT network namespace (root), as `dockyard up`'s
all-in-one runs: the kind of host the integration tests and most of bench/ use, beside
the lab's hosts in namespaces of their own (``hosts.py``).

    dockerd  private socket, data root and exec root; --bridge=none --iptables=false
    server   dockyard-server on 127.0.0.1:<free port>, SQLite in a temp dir
    agent    dockyard-agent for host "itest", DOCKER_HOST -> the private dockerd
    bridge   dyt-<hex>, created by the agent on first plumb (or by the probe)
    probe    netns dyp-<hex> with a veth on the bridge, 198.18.<n>.254

Everything is torn down by PID and by the names it created, also after a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from dockyard.lab.daemons import Dockerd, agent_cmd, healthy, remove_agent_views, server_cmd
from dockyard.lab.procs import (
    LabError,
    dockyard,
    free_port,
    remove_cgroups,
    run,
    stop_proc,
    wait_for,
)

HOST = "itest"


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
        run("ip", "link", "add", self.host_if, "type", "veth",
            "peer", "name", "probe0", "netns", self.ns)  # fmt: skip
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


class OneHost:
    """dockerd, server, agent and probe of one host; ``start`` then ``stop`` (which
    also undoes a half-done ``start``)."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.root = Path(tempfile.mkdtemp(prefix=f"dyk-{self.tag}-"))
        self.bridge = f"dyt-{self.tag}"
        self.subnet = f"198.18.{int(self.tag[:2], 16) % 200 + 20}"
        self.dockerd = Dockerd(self.root, self.tag)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_proc: subprocess.Popen[bytes] | None = None
        self.agent_proc: subprocess.Popen[bytes] | None = None
        self.probe = Probe(self.tag, self.bridge, f"{self.subnet}.254/24")
        self.admin = ""
        self.env: dict[str, str] = {}

    # --- processes

    def start(self) -> None:
        self.dockerd.start()
        self.start_server()
        self.admin = (self.root / "server" / "admin.token").read_text().strip()
        self.env = {
            **os.environ,
            "DOCKYARD_URL": self.url,
            "DOCKYARD_TOKEN": self.admin,
            "DOCKER_HOST": self.dockerd.url,
        }
        token = self.cli("host", "token", HOST).stdout.strip()
        (self.root / "agent.token").write_text(token + "\n")
        self.start_agent()
        self.probe.start()

    def start_server(self) -> None:
        log = (self.root / "server.log").open("ab")
        cmd = server_cmd(self.root / "server", f"127.0.0.1:{self.port}")
        self.server_proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        wait_for(lambda: healthy(self.url), 30, f"the server (see {self.root}/server.log)", 0.05)

    def start_agent(self, wait: bool = True, args: tuple[str, ...] = (), **env: str) -> None:
        log = (self.root / "agent.log").open("ab")
        cmd = agent_cmd(
            self.url, self.root / "agent.token", HOST, self.root / "agent",
            "--cgroup", self.agent_cgroup, *args,
        )  # fmt: skip
        self.agent_proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, start_new_session=True,
            env={**os.environ, "DOCKER_HOST": self.dockerd.url, **env},
        )  # fmt: skip
        if wait:
            wait_for(self.host_up, 30, f"the agent to register (see {self.root}/agent.log)", 0.05)

    @property
    def agent_cgroup(self) -> str:
        """The agent's CPU cgroup: beside dockerd's parent, not in it (a dockerd's stop
        kills what its parent holds)."""
        return f"{self.dockerd.cgroup_parent}-agent"

    def host_up(self) -> bool:
        try:
            hosts = self.api("GET", "/hosts")
        except httpx.TransportError:
            return False
        return any(h["name"] == HOST and h["state"] == "up" for h in hosts)

    def kill_agent(self, sig: int = signal.SIGKILL) -> None:
        if self.agent_proc is None:
            raise LabError("no agent was started")
        stop_proc(self.agent_proc, sig)

    def stop(self) -> None:
        """After: no process, container, mount, cgroup, link or namespace of this host."""
        try:
            for inst in self.api("GET", "/instances"):
                self.api("DELETE", f"/instances/{inst['id']}", check=False)
            wait_for(lambda: not self.api("GET", "/instances"), 30, "instances to go")
        except Exception:
            pass  # a server or agent that is gone: what they made goes below
        for proc in (self.agent_proc, self.server_proc):
            if proc is not None:
                stop_proc(proc)
        self.dockerd.remove_containers()
        self.dockerd.stop()
        self.probe.stop()
        self.before_links_go()
        for name in self.links():
            run("ip", "link", "del", name, check=False)
        run("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.dockerd.exec_root, ignore_errors=True)
        remove_cgroups(self.agent_cgroup)
        remove_agent_views(self.root / "agent")
        keep = os.environ.get("DOCKYARD_KEEP_LOGS")  # a directory to copy the logs to
        if keep:
            for log in self.root.glob("*.log"):
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(log, Path(keep) / f"{self.tag}-{log.name}")
        shutil.rmtree(self.root, ignore_errors=True)

    def before_links_go(self) -> None:
        """A hook for what must go before the instances' links (the tests drop
        nft rules a killed agent left)."""

    # --- helpers

    def api(self, method: str, path: str, check: bool = True, **kw: Any) -> Any:
        r = httpx.request(
            method, f"{self.url}/v1{path}", timeout=30,
            headers={"authorization": f"Bearer {self.admin}"}, **kw,
        )  # fmt: skip
        if check and r.status_code >= 300:
            raise LabError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return dockyard(*args, env=self.env, check=check, timeout=180)

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-f", "json").stdout)

    def create(self, name: str, *extra: str, flavor: str = "small", image: str = "demo") -> Any:
        """`dockyard server create NAME --wait` on the network "net"."""
        return self.cli_json(
            "server", "create", name, "--image", image, "--flavor", flavor, "--network", "net",
            "--wait", *extra,
        )  # fmt: skip

    def setup_demo(self, memory_mb: int = 128, pids: int | None = 256) -> None:
        """The network "net" on the bridge, the flavor "small" and the image "demo"."""
        s = self.subnet
        self.cli("network", "create", "net", "--cidr", f"{s}.0/24", "--gateway", f"{s}.1",
                 "--bridge", self.bridge, "--pool", f"{s}.10-{s}.200", "--reserved", f"{s}.254",
                 "--hostname-rule", "web{o3}{o4:03d}")  # fmt: skip
        limits = ["--pids", str(pids)] if pids else []
        self.cli("flavor", "create", "small", "--vcpus", "1", "--memory", str(memory_mb), *limits)
        tar = self.root / "demo.tar"
        self.cli("image", "build-demo", "--output", str(tar))
        self.cli("image", "import", "demo", "--rootfs", str(tar))

    def inspect(self, instance_id: str) -> dict[str, Any]:
        """The instance's container as dockerd describes it (`docker inspect`)."""
        r = self.dockerd.engine("GET", f"/containers/dy-{instance_id}/json")
        if r.status_code != 200:
            raise LabError(f"no container dy-{instance_id}: {r.text}")
        return dict(r.json())

    def init_pids(self) -> list[int]:
        """The host PIDs of every running container's init."""
        ids = [c["Id"] for c in self.dockerd.engine("GET", "/containers/json").json()]
        return [int(self.dockerd.engine("GET", f"/containers/{i}/json").json()["State"]["Pid"])
                for i in ids]  # fmt: skip

    def links(self) -> list[str]:
        """The host's dy/dz/dw links of this cloud's instances (deleted ones included).

        Other clouds, a demo cloud or a user's instances on the same machine have
        links of the same shape; they are not this cloud's to count or delete.
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
        created in this cloud's database (SQLite, read as a file)."""
        db = self.root / "server" / "dockyard.db"
        if not db.exists():
            return set()
        with closing(sqlite3.connect(db, timeout=30)) as conn:
            ids = [row[0] for row in conn.execute("SELECT id FROM instances")]
        return {i.replace("-", "")[:11] for i in ids}

    def agent_files(self) -> list[str]:
        d = self.root / "agent" / "instances"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []
