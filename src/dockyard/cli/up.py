"""``dockyard up``: an all-in-one cloud on this host, in the foreground.

    dockyard up ──► docker-registry  (STATE_DIR/registry, cli/local_registry.py)
               ├──► dockyard-server  (SQLite in STATE_DIR, API on --listen)
               ├──► dockyard-agent   (this host, dockerd from DOCKER_HOST)
               └──► --monitoring: prometheus, prometheus-alertmanager
                                     (STATE_DIR/monitoring, lab/monitoring.py)

First run: creates the admin user (STATE_DIR/admin.env, mode 0600), an agent
token for this host, the cloud's CA (STATE_DIR/tls/ca.pem, key 0600), the metrics CA beside it
(metrics-ca.pem: the agents' /metrics certificates, trusted by Prometheus only) and the
demo network, flavor and image. Listening beyond loopback, the API is served
over HTTPS with a certificate from that CA for the server's addresses, and
admin.env names the CA (DOCKYARD_CA) so the CLI verifies it; on loopback it
stays plain HTTP (the all-in-one). Ctrl-C stops every child (by its PID);
instances keep running and are reconciled on the next `up`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from dockyard import pki
from dockyard.api.server import default_db_url, init, prepare_state_dir
from dockyard.cli import local_registry
from dockyard.cli.client import Api, CliError
from dockyard.db import identity
from dockyard.db.session import Database
from dockyard.lab import monitoring as lab_monitoring
from dockyard.lab.procs import LabError
from dockyard.network import plumbing

DEMO_BRIDGE, DEMO_CIDR = "dyk-demo", "198.18.0.0/24"


def up(a: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise CliError("dockyard up needs root: its agent creates bridges and veth pairs")
    state = Path(a.state_dir).resolve()
    demo = None if a.no_demo else _demo_network(a.demo_cidr)
    prepare_state_dir(state)
    _check_docker()
    url, ca_file, tls = _tls(state, a.listen, list(getattr(a, "tls_name", None) or []))
    ca = None if tls is None else str(tls.ca)  # what clients verify with
    admin_token, agent_token_file = _credentials(
        state, a.host_name or socket.gethostname(), url, ca
    )
    mon = _monitoring_setup(a, state, url, ca)
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        host, _, port = a.listen.rpartition(":")
        shown, names = _names(host.strip("[]"), list(getattr(a, "tls_name", None) or []))
        registry = local_registry.where(state, shown, int(port) + 1, names, a.registry_http)
        registry_args = local_registry.start(registry)  # stopped at exit
        children.append(
            _spawn(
                "dockyard.api.server",
                "--state-dir",
                str(state),
                "--listen",
                a.listen,
                "--tls-ca",
                str(ca_file),
                *(["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)] if tls else []),
                *registry_args,
                *(["--monitoring-setup", str(mon.setup_file)] if mon else []),
                log=state / "server.log",
            )
        )
        _wait_ready(url, children[0], ca)
        api = Api(url, admin_token, ca=ca)
        if demo is not None:
            _demo(api, a.demo_bridge, demo)
        children.append(
            _spawn(
                "dockyard.compute.cli",
                "--server",
                url,
                "--token-file",
                str(agent_token_file),
                "--state-dir",
                str(state / "agent"),
                "--host-name",
                a.host_name or socket.gethostname(),
                # the CA verifies the API (https) and the registry: dockerd trusts it there
                # through /etc/docker/certs.d (--trust-registries)
                *(["--ca-file", str(ca_file)] if ca or not a.registry_http else []),
                *([] if a.registry_http else ["--trust-registries"]),
                # /metrics on the API's port + 4 (+1 registry, +2/+3 Prometheus and
                # Alertmanager): two clouds on one machine do not clash on :9787
                "--metrics-listen",
                f":{int(a.listen.rpartition(':')[2]) + 4}",
                log=state / "agent.log",
            )
        )
        if mon is not None:
            children += _start_monitoring(state, mon)
        _banner(url, state, None if demo is None else str(demo[10]), mon)
        while not stopping and all(c.poll() is None for c in children):
            time.sleep(0.2)
        dead = [c for c in children if c.poll() is not None]
        if dead and not stopping:
            print(f"error: a child exited ({dead[0].args!r}); see {state}/*.log", file=sys.stderr)
            return 1
        return 0
    finally:
        for child in reversed(children):
            _terminate(child)


def _monitoring_setup(
    a: argparse.Namespace, state: Path, url: str, ca: str | None
) -> lab_monitoring.Monitoring | None:
    """STATE_DIR/monitoring/setup.json before the server starts (it renders the daemons'
    files from it, and writes their scrape token: the monitoring token)."""
    if not getattr(a, "monitoring", False):
        return None
    port = int(a.listen.rpartition(":")[2])
    ports = a.monitoring_ports or f"{port + 2},{port + 3}"
    try:
        prom, am = (int(p) for p in ports.split(","))
        lab_monitoring.check_installed()
        mon = lab_monitoring.Monitoring(state / "monitoring", prom, am)
        tuning = lab_monitoring.read_tuning(Path(a.alert_tuning) if a.alert_tuning else None)
        lab_monitoring.write_setup(mon, url, ca, tuning)
    except ValueError as exc:
        raise CliError(f"--monitoring-ports {ports}: give two ports, e.g. 9090,9093") from exc
    except LabError as exc:
        raise CliError(str(exc)) from exc
    return mon


def _start_monitoring(state: Path, mon: lab_monitoring.Monitoring) -> list[subprocess.Popen[bytes]]:
    try:
        procs = list(lab_monitoring.start(mon).values())
    except LabError as exc:
        raise CliError(str(exc)) from exc
    lab_monitoring.write_env(state, mon)
    return procs


def _check_docker() -> None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return  # a TCP dockerd: the agent will say if it cannot reach it
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=host[len("unix://") :])) as c:
            c.get("http://docker/_ping", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise CliError(
            f"dockerd is not answering at {host}: {exc}; start it, or set DOCKER_HOST"
        ) from exc


def _tls(state: Path, listen: str, extra: list[str]) -> tuple[str, Path, pki.ServerTls | None]:
    """The API's URL, the CA (made once), and a server certificate for the
    addresses the server listens on when that is beyond loopback (else None)."""
    host, _, port = listen.rpartition(":")
    ca, _ = pki.ensure_ca(state / "tls")
    pki.ensure_metrics_ca(state / "tls")  # the agents' /metrics certificates' (Prometheus's)
    shown, names = _names(host.strip("[]"), extra)
    if _loopback(host.strip("[]")):
        return f"http://{listen}", ca, None
    tls = pki.ensure_server_cert(state / "tls", names)
    return f"https://{_bracketed(shown)}:{port}", ca, tls


def _names(host: str, extra: list[str]) -> tuple[str, list[str]]:
    """The address clients are told (the first of this machine's when listening on all)
    and every name a certificate of this server needs."""
    if _loopback(host):
        return "127.0.0.1", list(dict.fromkeys([*extra, "127.0.0.1", "localhost"]))
    addresses = _local_addresses() if host in ("", "0.0.0.0", "::") else [host]
    names = [*addresses, *extra, socket.gethostname(), "localhost", "127.0.0.1"]
    return (addresses[0] if addresses else "127.0.0.1"), list(dict.fromkeys(names))


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _local_addresses() -> list[str]:
    """This machine's IPv4 addresses beyond loopback, for the wildcard listener."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True)
    found = [line.split()[3].split("/")[0] for line in out.stdout.splitlines() if " inet " in line]
    return [a for a in found if not ipaddress.ip_address(a).is_loopback]


def _credentials(state: Path, host: str, url: str, ca: str | None) -> tuple[str, Path]:
    db = Database(default_db_url(state))
    token = init(db)
    env = state / "admin.env"
    if not token and not env.exists():
        raise CliError(
            f"{state} has a database but no admin.env; restore it or use a new --state-dir"
        )
    token = token or _read_env(env)["DOCKYARD_TOKEN"]
    trust = f"export DOCKYARD_CA={ca}\n" if ca else ""
    _secret(env, f"export DOCKYARD_URL={url}\nexport DOCKYARD_TOKEN={token}\n{trust}")
    agent_file = state / "agent.token"
    if not agent_file.exists():
        with db.session() as s:
            _secret(agent_file, identity.issue_agent_token(s, host) + "\n")
    db.engine.dispose()
    return token, agent_file


def _secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        out[key.strip()] = value.strip()
    return out


def _spawn(module: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=out, stderr=out, start_new_session=True
    )


def _wait_ready(
    url: str, server: subprocess.Popen[bytes], ca: str | None, timeout: float = 30
) -> None:
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise CliError("the server exited at start; see server.log in the state dir")
        try:
            if httpx.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise CliError(f"the server did not answer on {url} within {timeout:.0f}s")


def _demo(api: Api, bridge: str, net: ipaddress.IPv4Network) -> None:
    """The demo network, flavor and image, created once.

    The network's gateway is the CIDR's first address, its pool runs from the
    tenth to the sixth from the end, and this host takes the last one on the
    bridge, so this shell can reach instances; no route or NAT beyond the bridge.
    """
    host_addr = str(net[-2])
    if not api.exists("/networks/demo"):
        api.post(
            "/networks",
            {
                "name": "demo",
                "bridge": bridge,
                "mtu": 1500,
                "subnet": {
                    "cidr": str(net),
                    "gateway": str(net[1]),
                    "pools": [{"start": str(net[10]), "end": str(net[-6])}],
                    "reserved": [host_addr],
                    "hostname_rule": "demo{o3}{o4:03d}",
                },
            },
        )
    plumbing.ensure_bridge(bridge, None, 1500)
    plumbing.ensure_address(bridge, f"{host_addr}/{net.prefixlen}")
    if not api.exists("/flavors/small"):
        api.post("/flavors", {"name": "small", "vcpus": 1, "memory_mb": 256, "pids_limit": 512})
    if not api.exists("/images/demo"):
        from dockyard.images import rootfs

        with tempfile.TemporaryDirectory() as tmp:
            tar = rootfs.build(Path(tmp) / "demo.tar")
            image = api.post(
                "/images", {"name": "demo", "source": "rootfs", "command": rootfs.INIT_COMMAND}
            )
            api.upload(f"/images/{image['id']}/file", tar)


def _demo_network(cidr: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as exc:
        raise CliError(f"--demo-cidr {cidr!r} is not an IPv4 network (e.g. {DEMO_CIDR})") from exc
    if net.num_addresses < 32:
        raise CliError(f"--demo-cidr {cidr} is too small; give a /27 or larger")
    return net


def _banner(
    url: str, state: Path, first_ip: str | None, mon: lab_monitoring.Monitoring | None = None
) -> None:
    monitoring = (
        f"""
  monitoring:   source {state}/monitoring.env   (Prometheus {mon.prometheus_url}, \
Alertmanager {mon.alertmanager_url})"""
        if mon
        else ""
    )
    demo = f"""
  try:          dockyard server create web --image demo --flavor small --network demo --wait
                ping {first_ip}"""
    print(
        f"""Dockyard is up.
  API:          {url}/v1   (OpenAPI: {url}/openapi.json)
  credentials:  source {state}/admin.env     (admin token, mode 0600)
  logs:         {state}/server.log {state}/agent.log{monitoring}{demo if first_ip else ""}
Ctrl-C stops the server and the agent; instances keep running.""",
        flush=True,
    )


def _terminate(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
