"""``dockyard lab``: a cloud of N hosts on this machine (see README.md beside this file).

State: DIR/lab.json names everything the lab made (PIDs, namespaces, links,
cgroups), so ``down`` removes exactly that, and is written after every step
so a failed ``up`` can be taken down too.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from dockyard import pki
from dockyard.lab import monitoring as lab_monitoring
from dockyard.lab import registry as lab_registry
from dockyard.lab import wiring
from dockyard.lab.daemons import healthy, server_cmd
from dockyard.lab.hosts import LabHost
from dockyard.lab.procs import (
    LabError,
    alive,
    free_port,
    free_ports,
    stop_pid,
    unmount_under,
    wait_for,
)

NETWORK, BRIDGE = "lab", "dyl-lab"


class Lab:
    def __init__(self, state_dir: Path, data: dict[str, Any]) -> None:
        self.dir, self.data = state_dir, data
        self.hosts = [LabHost(**h) for h in data.get("hosts", [])]

    # --- state

    @classmethod
    def load(cls, state_dir: Path) -> Lab:
        path = state_dir.resolve() / "lab.json"
        if not path.exists():
            raise LabError(f"{path} does not exist: no lab there (dockyard lab up makes one)")
        return cls(state_dir.resolve(), json.loads(path.read_text()))

    def save(self) -> None:
        self.data["hosts"] = [h.to_json() for h in self.hosts]
        tmp = self.dir / "lab.json.tmp"  # 0600: it holds the admin's token
        _secret(tmp, json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.dir / "lab.json")

    @property
    def url(self) -> str:
        return str(self.data["url"])

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"no lab host {name!r}; the lab has {', '.join(h.name for h in self.hosts)}")

    # --- the server and its API

    def start_server(self) -> None:
        if alive(self.data.get("server_pid"), str(self.dir / "server")):
            return
        log = (self.dir / "server.log").open("ab")
        tls = self.tls()
        proc = subprocess.Popen(
            server_cmd(self.dir / "server", f"{self.data['switch_ip']}:{self.data['port']}",
                       "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
                       "--tls-ca", str(tls.ca), *lab_registry.server_args(self.data),
                       *self._down_after(), *self._monitoring_args()),
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        self.data["server_pid"] = proc.pid
        self.save()
        wait_for(self._healthy, 30, f"the server on {self.url} (see {self.dir}/server.log)")
        self.data["admin_token"] = (self.dir / "server" / "admin.token").read_text().strip()
        _secret(
            self.dir / "admin.env",
            f"export DOCKYARD_URL={self.url}\nexport DOCKYARD_TOKEN={self.data['admin_token']}\n"
            f"export DOCKYARD_CA={self.ca}\n",
        )
        self.save()

    @property
    def monitoring(self) -> lab_monitoring.Monitoring | None:
        m = self.data.get("monitoring")
        if m is None:
            return None
        return lab_monitoring.Monitoring(
            Path(m["dir"]), m["prometheus_port"], m["alertmanager_port"]
        )

    def _monitoring_args(self) -> list[str]:
        mon = self.monitoring
        return [] if mon is None else ["--monitoring-setup", str(mon.setup_file)]

    def _down_after(self) -> list[str]:
        after = self.data.get("host_down_after")
        return [] if after is None else ["--host-down-after", str(after)]

    def _healthy(self) -> bool:
        if not alive(self.data.get("server_pid"), str(self.dir / "server")):
            raise LabError(f"the server exited at start; see {self.dir}/server.log")
        return healthy(self.url, self.ca)

    @property
    def ca(self) -> Path:
        return self.dir / "tls" / "ca.pem"

    def tls(self) -> pki.ServerTls:
        """The lab's CA (made once) and the server's certificate for the switch address,
        as `dockyard up` makes them for a server that listens beyond loopback."""
        pki.ensure_ca(self.dir / "tls")
        return pki.ensure_server_cert(self.dir / "tls", [self.data["switch_ip"], "127.0.0.1"])

    def api(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        headers = {"authorization": f"Bearer {self.data['admin_token']}", **kw.pop("headers", {})}
        verify = ssl.create_default_context(cafile=str(self.ca))
        r = httpx.request(
            method, f"{self.url}/v1{path}", json=body, timeout=60, headers=headers,
            verify=verify, **kw,
        )  # fmt: skip
        if r.status_code >= 300:
            raise LabError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def hosts_up(self, since: datetime | None = None) -> set[str]:
        """Hosts the server has up (with a heartbeat after ``since``, when given: a host
        stays up for a while after its agent stops)."""
        return {
            h["name"]
            for h in self.api("GET", "/hosts")
            if h["state"] == "up" and (since is None or _after(h.get("last_heartbeat"), since))
        }

    # --- joining

    def join(self, host: LabHost) -> None:
        """The path real hosts take: an admin's one-time join token (`dockyard host add
        NAME --az AZ`) and the CA's pin, with which the host's agent verifies the server,
        trades the token for its own credential and keeps it (later starts use that)."""
        out = self.api("POST", "/join-tokens", {"host": host.name, "availability_zone": host.az})
        host.extra["join"] = {"url": self.url, "token": out["token"], "ca_hash": out["ca_hash"]}


def up(
    state_dir: Path,
    hosts: int,
    azs: list[str],
    demo: bool = True,
    host_down_after: float | None = None,
    monitoring: dict[str, Any] | None = None,
    build_host: bool = False,
) -> Lab:
    """Build the lab; returns when every host is up. On a failure, what was made is
    removed again (the logs stay under ``state_dir``) and the error says where to look.
    ``monitoring``: also run Prometheus and Alertmanager (lab/monitoring.py), with this
    tuning (``{}`` for the defaults). ``build_host``: the last host's agent also runs
    builds, on its last core (reserved for the host: no instance is placed on it)."""
    state_dir = state_dir.resolve()
    try:
        return _up(state_dir, hosts, azs, demo, host_down_after, monitoring, build_host)
    except BaseException as exc:
        if (state_dir / "lab.json").exists() and not isinstance(exc, _Refused):
            down(state_dir)
            if isinstance(exc, (LabError, OSError)):
                raise LabError(
                    f"{exc}; the half-built lab was removed (logs in {state_dir})"
                ) from exc
        raise


class _Refused(LabError):
    """Refused before anything was made (the state dir may hold someone's lab)."""


def _up(
    state_dir: Path,
    hosts: int,
    azs: list[str],
    demo: bool,
    host_down_after: float | None,
    monitoring: dict[str, Any] | None,
    build_host: bool = False,
) -> Lab:
    if not 1 <= hosts <= 50:
        raise _Refused(f"--hosts {hosts}: give 1 to 50")
    if monitoring is not None:
        try:
            lab_monitoring.check_installed()
        except LabError as exc:
            raise _Refused(str(exc)) from exc
    if os.geteuid() != 0:
        raise _Refused("dockyard lab up needs root: it makes namespaces, links and dockerds")
    if (state_dir / "lab.json").exists():
        raise _Refused(f"{state_dir} already holds a lab; `dockyard lab down` it or pick another")
    state_dir.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(2)
    mgmt, inst = wiring.pick_subnets(tag)
    data = {"tag": tag, **wiring.names(tag), "mgmt_cidr": str(mgmt), "net_cidr": str(inst)}
    lab = Lab(state_dir, {**data, "switch_ip": str(mgmt[1]), "hosts": []})
    lab.data["port"] = free_port()
    lab.data["url"] = f"https://{mgmt[1]}:{lab.data['port']}"
    if host_down_after is not None:
        lab.data["host_down_after"] = host_down_after
    if monitoring is not None:
        _monitoring_setup(lab, monitoring)
    lab.save()
    wiring.make_switch(lab.data["switch"], f"{mgmt[1]}/{mgmt.prefixlen}")
    lab_registry.start(lab, azs)
    lab.start_server()
    lab_registry.register_caches(lab)
    for i in range(1, hosts + 1):
        builds = build_host and i == hosts
        _add_host(lab, i, azs[(i - 1) % len(azs)], mgmt, builds)
    wait_for(lambda: {h.name for h in lab.hosts} <= lab.hosts_up(), 60, "every host to be up")
    _network(lab, inst)
    if demo:
        _demo(lab)
    _start_monitoring(lab)
    return lab


def _monitoring_setup(lab: Lab, tuning: dict[str, Any]) -> None:
    """DIR/monitoring/setup.json before the server starts: it renders the daemons'
    files from it. Prometheus runs in the root namespace and reaches the server on the
    switch and the agents on their management addresses."""
    ports = free_ports(2)  # two calls of free_port could return the same one
    mon = lab_monitoring.Monitoring(lab.dir / "monitoring", ports, ports + 1)
    lab_monitoring.write_setup(mon, lab.url, str(lab.ca), tuning)
    lab.data["monitoring"] = {"dir": str(mon.dir), "prometheus_port": mon.prometheus_port,
                              "alertmanager_port": mon.alertmanager_port, "pids": {}}  # fmt: skip


def _start_monitoring(lab: Lab) -> None:
    mon = lab.monitoring
    if mon is None:
        return
    procs = lab_monitoring.start(mon)
    lab.data["monitoring"]["pids"] = {name: p.pid for name, p in procs.items()}
    lab.save()
    lab_monitoring.write_env(lab.dir, mon)


def _add_host(
    lab: Lab, i: int, az: str, mgmt: ipaddress.IPv4Network, builds: bool = False
) -> None:
    tag = lab.data["tag"]
    n = wiring.host_names(tag, i)
    host = LabHost(
        name=f"lab{i}", az=az, index=i, mgmt_ip=str(mgmt[10 + i]),
        dir=str(lab.dir / "hosts" / f"lab{i}"), exec_root=f"/run/dyl{tag}h{i}",
        cgroup_parent=f"dyl{tag}h{i}", netns=n["netns"], mgmt_if=n["mgmt_if"],
        uplink_if=n["uplink_if"],
    )  # fmt: skip
    if lab.data.get("host_down_after") is not None:
        host.extra["host_down_after"] = lab.data["host_down_after"]
    if builds:  # builds run on cores kept from instances: the machine's last one
        last = (os.cpu_count() or 1) - 1
        host.extra["agent_args"] = ["--builds", "--reserved-cores", str(last),
                                    "--reserved-memory-mb", "2048"]  # the builds' memory
    Path(host.dir).mkdir(parents=True, exist_ok=True)
    lab.hosts.append(host)
    lab.save()
    wiring.make_host(lab.data["switch"], host.netns, host.mgmt_if, host.uplink_if,
                     f"{host.mgmt_ip}/{mgmt.prefixlen}")  # fmt: skip
    host.start_dockerd()
    lab.save()
    lab.join(host)
    host.start_agent()
    lab.save()


def _network(lab: Lab, net: ipaddress.IPv4Network) -> None:
    """The network ``lab``: bridge dyl-lab on every host, enslaving its uplink0 (the
    agents' --uplink); the probe on the switch takes the last address."""
    lab.api("POST", "/networks", {
        "name": NETWORK, "bridge": BRIDGE, "mtu": 1500,
        "subnet": {"cidr": str(net), "gateway": str(net[1]),
                   "pools": [{"start": str(net[10]), "end": str(net[200])}],
                   "reserved": [str(net[254])], "hostname_rule": "lab{o3}{o4:03d}"},
    })  # fmt: skip
    wiring.make_probe(lab.data["switch"], lab.data["probe_ns"], lab.data["probe_if"],
                      f"{net[254]}/{net.prefixlen}")  # fmt: skip
    lab.data["probe_ip"] = str(net[254])
    lab.save()


def _demo(lab: Lab) -> None:
    """The flavor ``small`` and the image ``demo`` (busybox), as `dockyard up` makes."""
    from dockyard.images import rootfs

    lab.api("POST", "/flavors", {"name": "small", "vcpus": 1, "memory_mb": 128, "pids_limit": 256})
    with tempfile.TemporaryDirectory() as tmp:
        tar = rootfs.build(Path(tmp) / "demo.tar")
        image = lab.api(
            "POST", "/images", {"name": "demo", "source": "rootfs", "command": rootfs.INIT_COMMAND}
        )
        with tar.open("rb") as f:
            lab.api("PUT", f"/images/{image['id']}/file", content=f,
                    headers={"content-type": "application/octet-stream"})  # fmt: skip


def down(state_dir: Path) -> list[str]:
    """Remove everything lab.json names; returns what could not be removed. A second
    call finds nothing to do."""
    path = state_dir.resolve() / "lab.json"
    if not path.exists():
        return []
    lab = Lab.load(state_dir)
    left: list[str] = []
    for host in lab.hosts:
        left += host.remove()
    mon = lab.data.get("monitoring")
    if mon:
        lab_monitoring.stop(mon.get("pids", {}), Path(mon["dir"]))
    stop_pid(lab.data.get("server_pid"), str(lab.dir / "server"))
    lab_registry.stop(lab.dir, lab.data)
    wiring.remove_netns(lab.data["probe_ns"], lab.data["probe_if"])
    wiring.remove_switch(lab.data["switch"])
    unmount_under(lab.dir)
    _keep_only_logs(lab.dir)
    path.unlink()
    return left


def _keep_only_logs(state_dir: Path) -> None:
    """What the lab wrote under DIR goes (data roots, database, credentials); the logs
    stay for a post-mortem."""
    made = [state_dir / "server", *(state_dir / "hosts").glob("*/*")]
    for sub in [*made, *(state_dir / "monitoring").glob("*")]:
        if sub.is_dir():
            shutil.rmtree(sub, ignore_errors=True)
        elif sub.suffix != ".log":
            sub.unlink(missing_ok=True)
    (state_dir / "admin.env").unlink(missing_ok=True)
    (state_dir / "monitoring.env").unlink(missing_ok=True)


def status(state_dir: Path) -> list[dict[str, Any]]:
    lab = Lab.load(state_dir)
    up_: set[str] = set()
    if alive(lab.data.get("server_pid"), str(lab.dir / "server")):
        try:
            up_ = lab.hosts_up()
        except (httpx.HTTPError, LabError):
            pass
    return [
        {"name": h.name, "az": h.az, "netns": h.netns, "mgmt_ip": h.mgmt_ip,
         "dockerd": h.sock, "dockerd_alive": alive(h.dockerd_pid, h.exec_root),
         "agent_pid": h.agent_pid, "agent_alive": alive(h.agent_pid, h.dir),
         "state": "up" if h.name in up_ else "down"}
        for h in lab.hosts
    ]  # fmt: skip


def host_stop(state_dir: Path, name: str, dockerd: bool) -> None:
    lab = Lab.load(state_dir)
    host = lab.host(name)
    host.stop_agent()
    if dockerd:
        host.stop_dockerd()
    lab.save()


def host_start(state_dir: Path, name: str) -> None:
    lab = Lab.load(state_dir)
    host = lab.host(name)
    host.start_dockerd()
    lab.save()
    started = datetime.now(UTC)
    host.start_agent()
    lab.save()
    wait_for(lambda: name in lab.hosts_up(since=started), 60, f"{name}'s agent to report")


def _after(stamp: str | None, since: datetime) -> bool:
    if not stamp:
        return False
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) >= since


def _secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
