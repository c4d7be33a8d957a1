"""The ``dockyard-agent`` command line: flags, checks against this host, wiring.

Flags the server would refuse are refused here first (exit 2 naming the flag),
before anything on the host changes. ``main`` then wires the real host parts
into the Agent (compute/agent.py): the Docker driver, the host plumber, the
/proc view writer, the cgroup meter and the loop-device volumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import resource
import signal
import socket
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic

from dockyard import cgroups, logs, model, pki
from dockyard.compute import agent as agent_module
from dockyard.compute import join, procfs
from dockyard.compute.agent import CACHE_TRUSTED_FOR, Agent, AgentConfig
from dockyard.compute.builds import Builder
from dockyard.compute.client import ServerClient
from dockyard.compute.driver import BUILD_CGROUP, cores_text
from dockyard.compute.exporter import Endpoint, Exporter, MetricsServer
from dockyard.compute.health import HEALTH_HELP, HEALTH_METRIC
from dockyard.compute.kmsg import KernelLog
from dockyard.compute.metrics import Allowance, Sampler
from dockyard.compute.monitor import CgroupMeter
from dockyard.compute.plumber import HostPlumber
from dockyard.compute.procfs import ProcView
from dockyard.compute.recovery import Recoverer
from dockyard.compute.supervisor import SupervisorWatch
from dockyard.compute.transfer import RegistryTransfer
from dockyard.compute.volumes import LoopVolumes
from dockyard.errors import TemporaryError
from dockyard.model.builds import BUILDS_LABEL
from dockyard.monitor.drift import INSTANCE_HELP, INSTANCE_METRIC
from dockyard.monitor.samples import SampleCollector
from dockyard.network import plumbing

BUILD_MEMORY_MIN = 64  # MiB: the least a build order asks (model/builds.py)
log = logging.getLogger("dockyard.agent")


def _cores(p: argparse.ArgumentParser, text: str) -> list[int]:
    """'0-1,3' -> [0, 1, 3]."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        try:
            out += range(int(first), int(last or first) + 1)
        except ValueError:
            p.error(f"--reserved-cores {text!r}: write core numbers like 0 or 0-1,3")
    return out


def _labels(p: argparse.ArgumentParser, pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            p.error(f"--label {pair!r}: write KEY=VALUE")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    p = _parser()
    args = p.parse_args(argv)
    logs.configure(args.log_level)
    cfg = _config(p, args)
    _check_host_flags(p, cfg, *_host_capacity())
    if args.uplink and not Path("/sys/class/net", args.uplink).exists():
        p.error(f"--uplink {args.uplink}: no such interface on this host (see `ip link`)")
    if args.uplink and plumbing.uplink_problem(args.uplink):
        p.error(f"--uplink {args.uplink}: {plumbing.uplink_problem(args.uplink)}")
    cfg, ca_file = _enrol(p, args, cfg)
    _keep_up(p, args, cfg)
    registry_ca = ca_file if args.trust_registries else None
    stopping, wired = threading.Event(), list[Agent]()

    def stop(*_: object) -> None:
        stopping.set()
        for agent in wired:
            agent.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    recoverer = _start_recovery(cfg, ca_file, stopping, lambda: wired[0] if wired else None)
    while not stopping.is_set():
        try:
            wired.append(_wire(cfg, args.docker_host, args.uplink, ca_file, registry_ca))
            recoverer.data_root()  # learnt now: this host may die before anything else asks
            break
        except Exception as exc:  # the docker SDK's errors: only the Docker driver imports it
            log.warning("cannot start (%s); only offline recovery runs; retrying in 10 s", exc)
            stopping.wait(10)
    if wired and not stopping.is_set():
        _serve_metrics(p, args, wired[0], ca_file)
        if args.builds:
            cgroup = builds_cgroup(args.cgroup)
            _start_builds(wired[0], ca_file, stopping, args.build_network, cgroup)
        wired[0].run()
    procfs.tidy_views()


def _start_recovery(
    cfg: AgentConfig,
    ca_file: Path | None,
    stopping: threading.Event,
    agent: Callable[[], Agent | None],
) -> Recoverer:
    """Offline data recovery (compute/recovery.py) on its own thread and long poll,
    from before the agent is wired: it must work while dockerd does not answer (the
    Docker client cannot even be made then), and it sends no heartbeat, so a host
    whose dockerd will not start stays down for the scheduler."""
    from dockyard.compute.drivers.docker import DockerDriver
    from dockyard.compute.drivers.docker_files import DockerFiles

    def docker_root() -> str:
        found = agent()
        data_root = getattr(found.driver, "data_root", None) if found else None
        if data_root is None:
            raise TemporaryError("dockerd has not answered since the agent started")
        return str(data_root())

    def files_into() -> DockerFiles:
        found = agent()
        if found is None or not isinstance(found.driver, DockerDriver):
            raise TemporaryError("dockerd has not answered since the agent started")
        return DockerFiles(found.driver.api)

    recoverer = Recoverer(
        ServerClient(cfg.server, cfg.token, cfg.host, ca_file),
        cfg.state_dir,
        cfg.host,
        LoopVolumes(cfg.state_dir / "volumes"),
        docker_root,
        files_into,
    )
    threading.Thread(target=recoverer.run, args=(stopping,), daemon=True, name="recovery").start()
    return recoverer


def builds_cgroup(agent_cgroup: str) -> str:
    """The builds' cgroup parent: a sibling of the agent's own cgroup (``X/agent`` ->
    ``X/dockyard-builds``; top-level or 'off' -> ``dockyard-builds``), never inside it:
    there it would share the agent's hundredfold CPU weight."""
    parent = agent_cgroup.strip("/").rpartition("/")[0] if agent_cgroup != "off" else ""
    return f"{parent}/{BUILD_CGROUP}" if parent else BUILD_CGROUP


def _start_builds(
    agent: Agent,
    ca_file: Path | None,
    stopping: threading.Event,
    network: str = "none",
    cgroup: str = BUILD_CGROUP,
) -> Builder:
    """The build runner (compute/builds.py) on its own thread and long poll, with the
    agent's driver, on the host's reserved cores and memory, its steps under the
    cgroup parent ``cgroup``; stopped with the agent."""
    builder = Builder(
        ServerClient(agent.cfg.server, agent.cfg.token, agent.cfg.host, ca_file),
        agent.driver,
        agent.cfg.state_dir,
        agent.cfg.reserved_cores,
        memory_mb=agent.cfg.reserved_memory_mb,
        sizer=RegistryTransfer(str(ca_file) if ca_file else True),
        network=network,
        cgroup=cgroup,
    )
    threading.Thread(target=builder.run, args=(stopping,), daemon=True, name="builds").start()
    log.info(
        "carrying out builds on cores %s, up to %d MiB, network %s, cgroup parent %s",
        cores_text(agent.cfg.reserved_cores), agent.cfg.reserved_memory_mb, network, cgroup,
    )  # fmt: skip
    return builder


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dockyard-agent",
        description=agent_module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--server",
        default=os.environ.get("DOCKYARD_URL"),
        help="the server's URL (default: the joined server's, else http://127.0.0.1:8787)",
    )
    p.add_argument("--token-file", type=Path, help="this host's agent token (if it did not join)")
    p.add_argument("--ca-file", type=Path, help="verify the https server against this CA")
    p.add_argument(
        "--trust-registries",
        action="store_true",
        help="before a pull, put the cloud's CA in /etc/docker/certs.d/HOST:PORT/ca.crt for "
        "the registry (where none is) so this dockerd verifies it (scripts/setup --join)",
    )
    p.add_argument("--join", metavar="URL", help="join the cloud at URL (as `host add` printed)")
    p.add_argument(
        "--token",
        default=os.environ.get("DOCKYARD_JOIN_TOKEN") or None,
        help="the one-time join token, with --join (default: $DOCKYARD_JOIN_TOKEN, which "
        "keeps it off the command line other users can read)",
    )
    p.add_argument("--ca-hash", help="sha256:<hex> the server's CA must have, with --join")
    p.add_argument("--host-name", help="default: the joined name, else this machine's hostname")
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/dockyard-agent"))
    p.add_argument("--availability-zone", help="default: the zone the join token names, or nova")
    p.add_argument(
        "--network",
        action="append",
        dest="networks",
        help="a network this host is attached to (repeat; default all)",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a host label for the scheduler and the console (repeatable)",
    )
    p.add_argument(
        "--reserved-cores",
        default="",
        metavar="LIST",
        help="cores kept for the host itself, e.g. 0 or 0-1",
    )
    p.add_argument("--reserved-memory-mb", type=int, default=0)
    p.add_argument(
        "--builds",
        action="store_true",
        help="carry out image builds (continuous integration) on this host, on its "
        "--reserved-cores (never an instance's); the host is labelled "
        f"{BUILDS_LABEL}=<those cores> for the server; needs --reserved-memory-mb "
        "at least the server's --build-memory-mb",
    )
    p.add_argument(
        "--build-network",
        default="none",
        metavar="NAME",
        help="the dockerd network builds' RUN steps use (default none: no network); "
        "give one made for builds, never the instances' or the management network",
    )
    p.add_argument(
        "--cpu-allocation-ratio",
        type=float,
        default=16.0,
        help="shared vCPUs per free physical core",
    )
    p.add_argument("--ram-allocation-ratio", type=float, default=1.0)
    p.add_argument(
        "--uplink",
        metavar="IFACE",
        help="the NIC every network bridge enslaves when its network names none "
        "(instances on hosts sharing that segment share one L2 network)",
    )
    p.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST"))
    p.add_argument(
        "--bridge-nf",
        choices=["allow", "leave"],
        default="allow",
        help="allow: accept traffic between the ports of each Dockyard bridge in iptables "
        "(DOCKER-USER or FORWARD) in case br_netfilter sends it there; leave: add no rule "
        "(docs/architecture.md)",
    )
    p.add_argument(
        "--host-down-after",
        type=float,
        default=CACHE_TRUSTED_FOR,
        metavar="SECONDS",
        help="the server's --host-down-after (default 30): an agent that has not heard "
        "from the server for longer starts nothing from its cached desired state until "
        "the server answers (its instances may have been evacuated meanwhile)",
    )
    p.add_argument(
        "--metrics-listen",
        default=":9787",
        metavar="[ADDR]:PORT",
        help="serve /metrics here (default :9787, every address; port 0: any free port); "
        "'off': no /metrics",
    )
    p.add_argument(
        "--metrics-address",
        metavar="ADDR",
        help="the address Prometheus scrapes, advertised to the server's service discovery "
        "(default: the one this host reaches the server from)",
    )
    p.add_argument(
        "--metrics-cert",
        type=Path,
        help="serve /metrics over HTTPS with this certificate (PEM; default: "
        "STATE_DIR/metrics.pem if there, with metrics.key)",
    )
    p.add_argument("--metrics-key", type=Path, help="the --metrics-cert's private key (PEM)")
    p.add_argument(
        "--cgroup",
        default="dockyard-agent",
        metavar="PATH",
        help="run in this CPU cgroup (below the hierarchy's root; made if missing) with a "
        "hundred times an instance's CPU weight, so a saturated host still runs the agent; "
        "'off': stay where started",
    )
    p.add_argument(
        "--view-dir",
        metavar="DIR",
        help="keep the instances' /proc views here (default: /run/dockyard-agent/STATE_DIR/"
        "views, a tmpfs); 'state': under STATE_DIR/instances/<id>/proc",
    )
    p.add_argument("--log-level", default="info")
    return p


def _keep_up(p: argparse.ArgumentParser, args: argparse.Namespace, cfg: AgentConfig) -> None:
    """What lets the agent keep its views and figures current on a saturated host: a
    cgroup with a high CPU weight (every thread: no other thread runs yet), the
    reserved cores if the host keeps some, views on a tmpfs, and descriptors for the
    cgroup files it keeps open (~16 per instance)."""
    if args.cgroup != "off":
        try:
            where = cgroups.place_process(args.cgroup, os.getpid())
            log.info("running in cgroup %s", where)
        except ValueError as exc:
            p.error(f"--cgroup {args.cgroup}: {exc}")
        except OSError as exc:
            log.warning("not in cgroup %s (%s): it competes with instances", args.cgroup, exc)
    if cfg.reserved_cores:  # instances' cpusets leave these out (scheduler/state.py)
        os.sched_setaffinity(0, set(cfg.reserved_cores))
    if args.view_dir != "state":
        procfs.place_views(
            Path(args.view_dir) if args.view_dir else procfs.default_views_root(args.state_dir)
        )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 65536):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def _config(p: argparse.ArgumentParser, args: argparse.Namespace) -> AgentConfig:
    if not 0.1 <= args.host_down_after <= 86_400:
        p.error("--host-down-after: give 0.1 to 86400 seconds, as the server's")
    labels = _labels(p, args.label)
    reserved = _cores(p, args.reserved_cores)
    if BUILDS_LABEL in labels:
        p.error(f"--label {BUILDS_LABEL}: set by --builds (the reserved cores), not by hand")
    if args.builds and not reserved:
        p.error(
            "--builds needs --reserved-cores: builds run only on the cores kept for the "
            "host, never on an instance's (e.g. --reserved-cores 0 --builds)"
        )
    if args.builds and args.reserved_memory_mb < BUILD_MEMORY_MIN:
        p.error(
            "--builds needs --reserved-memory-mb: a build's memory is kept from instances "
            "(at least the server's --build-memory-mb, e.g. --reserved-memory-mb 2048)"
        )
    if args.builds:
        labels[BUILDS_LABEL] = cores_text(reserved)
    return AgentConfig(
        server=args.server or "http://127.0.0.1:8787",
        token=args.token_file.read_text().strip() if args.token_file else "",
        host=args.host_name or socket.gethostname(),
        state_dir=args.state_dir,
        availability_zone=args.availability_zone or "nova",
        networks=args.networks or ["*"],
        bridge_nf=args.bridge_nf,
        labels=labels,
        reserved_cores=reserved,
        reserved_memory_mb=args.reserved_memory_mb,
        cpu_allocation_ratio=args.cpu_allocation_ratio,
        ram_allocation_ratio=args.ram_allocation_ratio,
        cache_trusted_for=args.host_down_after,
    )


def _enrol(
    p: argparse.ArgumentParser, args: argparse.Namespace, cfg: AgentConfig
) -> tuple[AgentConfig, Path | None]:
    """The config with this host's credential: joined now (--join), joined before
    (the state dir's enrolment), or given (--token-file); and the CA to verify with."""
    if args.join and not (args.token and args.ca_hash):
        p.error("--join needs --token and --ca-hash, as `dockyard host add` printed them")
    known = join.saved(args.state_dir)
    if args.token_file is not None:
        return cfg, args.ca_file
    if known is None and not args.join:
        p.error("give --token-file, or join: --join URL --token T --ca-hash sha256:...")
    if known is None:
        try:
            known = join.join(args.join, args.token, args.ca_hash, args.state_dir)
        except join.JoinError as exc:
            raise SystemExit(f"dockyard-agent: {exc}") from exc
        logging.getLogger(__name__).info("joined %s as host %s", known.server, known.host)
    if args.host_name and args.host_name != known.host:
        p.error(f"--host-name {args.host_name}: this host joined as {known.host!r}")
    if args.availability_zone and args.availability_zone != known.availability_zone:
        p.error(
            f"--availability-zone {args.availability_zone}: this host joined zone "
            f"{known.availability_zone!r}, the one its join token names (the join is kept "
            f"in {args.state_dir}); drop the flag, or "
            f"have an admin move it (`dockyard host add {known.host} --az "
            f"{args.availability_zone}`, then join again with that token)"
        )
    return dataclasses.replace(
        cfg,
        server=args.server or known.server,
        token=known.token,
        host=known.host,
        availability_zone=known.availability_zone,
    ), args.ca_file or known.ca_file


def _wire(
    cfg: AgentConfig,
    docker_host: str | None,
    uplink: str | None = None,
    ca_file: Path | None = None,
    registry_ca: Path | None = None,
) -> Agent:
    """The agent with the real parts of this host."""
    from dockyard.compute.drivers.docker import DockerDriver  # the docker SDK: not for --help

    views = ProcView()
    return Agent(
        cfg,
        DockerDriver(cfg.host, docker_host, registry_ca=registry_ca),
        ServerClient(cfg.server, cfg.token, cfg.host, ca_file),
        plumber=HostPlumber(uplink),
        views=views,
        meter=CgroupMeter(views),
        volumes=LoopVolumes(cfg.state_dir / "volumes"),
        # volume data goes to the registries over https, verified by the cloud's CA
        transfer=RegistryTransfer(str(ca_file) if ca_file else True),
    )


def _serve_metrics(
    p: argparse.ArgumentParser, args: argparse.Namespace, agent: Agent, ca_file: Path | None
) -> None:
    """/metrics (compute/exporter.py) and the kernel-log reader, on threads of their own."""
    if args.metrics_listen == "off":
        return
    addr, _, port = args.metrics_listen.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        p.error(f"--metrics-listen {args.metrics_listen}: write [ADDR]:PORT, e.g. :9787")
    seen_from = _signed_certificate(args, agent.cfg, ca_file)
    tls = _metrics_tls(p, args)
    kernel = KernelLog()
    agent.metrics = Endpoint(
        Sampler(
            agent.driver,
            agent.worker.meter,
            SupervisorWatch(),
            agent.store.files_dir,
            Allowance(
                len(set(agent.cfg.reserved_cores)),
                agent.cfg.reserved_memory_mb,
                agent.cfg.cpu_allocation_ratio,
                agent.cfg.ram_allocation_ratio,
            ),
        ),
        url="",
        state_file=args.state_dir / "monitoring.json",
    )
    endpoint = agent.metrics
    endpoint.load()
    exporter = Exporter(
        agent.cfg.host, agent.cfg.availability_zone, lambda: endpoint.sampler.latest, kernel.counts
    )
    exporter.extra.append(SampleCollector(agent.drift_samples, {INSTANCE_METRIC: INSTANCE_HELP}))
    exporter.extra.append(SampleCollector(agent.health_samples, {HEALTH_METRIC: HEALTH_HELP}))
    try:
        server = MetricsServer((addr, int(port)), exporter, lambda: endpoint.tokens, tls)
    except OSError as exc:
        log.warning("cannot serve /metrics on %s (%s): no metrics", args.metrics_listen, exc)
        agent.metrics = None
        return
    server.start()
    here = args.metrics_address or addr or seen_from or _address_towards(agent.cfg.server)
    endpoint.url = f"{server.scheme}://{_host_port(here, server.port)}/metrics"
    threading.Thread(target=kernel.run, args=(agent.stop_event,), daemon=True, name="kmsg").start()
    log.info("serving %s", endpoint.url)


def _signed_certificate(
    args: argparse.Namespace, cfg: AgentConfig, ca_file: Path | None
) -> str | None:
    """A joined host (the cloud's CA known, an https server) without a certificate for
    its /metrics asks the server for one. Returns the address the server saw it call
    from (the certificate's), or None when nothing was asked or it was refused."""
    mine = args.state_dir / join.METRICS_CERT
    # one the cloud's CA signed (servers before the metrics CA) is asked for again
    have = args.metrics_cert or (
        mine.exists() and not (ca_file and pki.issued_by(mine.read_bytes(), ca_file.read_bytes()))
    )
    if have or ca_file is None or not cfg.server.startswith("https://"):
        return None
    try:
        address = join.metrics_certificate(cfg.server, cfg.token, cfg.host, ca_file, args.state_dir)
    except join.JoinError as exc:
        log.warning("serving /metrics over http: %s", exc)
        return None
    log.info("the server signed this host's /metrics certificate for %s", address)
    return address


def _metrics_tls(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Path, Path] | None:
    if (args.metrics_cert is None) != (args.metrics_key is None):
        p.error("--metrics-cert and --metrics-key go together")
    cert = args.metrics_cert or args.state_dir / join.METRICS_CERT
    key = args.metrics_key or args.state_dir / join.METRICS_KEY
    if cert.exists() and key.exists():
        return cert, key
    if args.metrics_cert is not None:
        p.error(f"--metrics-cert {cert} or --metrics-key {key}: no such file")
    return None


def _address_towards(server: str) -> str:
    """The local address this host reaches the server from (no packet is sent)."""
    url = urllib.parse.urlsplit(server)
    family = socket.AF_INET6 if ":" in (url.hostname or "") else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((url.hostname or "127.0.0.1", url.port or 443))
            return str(s.getsockname()[0])
        except OSError:
            return socket.gethostname()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_host_flags(
    p: argparse.ArgumentParser, cfg: AgentConfig, cores: int, memory_mb: int
) -> None:
    """Refuse flags the server would refuse, now (exit 2 naming the flag), instead of
    retrying forever; judged against this host's ``cores`` and ``memory_mb``."""
    outside = sorted(c for c in set(cfg.reserved_cores) if not 0 <= c < cores)
    if outside:
        p.error(
            f"--reserved-cores: cores {outside} do not exist on this {cores}-core host "
            f"(it has 0-{cores - 1})"
        )
    if len(set(cfg.reserved_cores)) >= cores:
        p.error(f"--reserved-cores: reserve fewer than this host's {cores} cores, or none is left")
    if not 0 <= cfg.reserved_memory_mb < memory_mb:
        p.error(
            f"--reserved-memory-mb {cfg.reserved_memory_mb}: give 0 up to less than this "
            f"host's {memory_mb} MB"
        )
    try:
        model.HostRegister(
            name=cfg.host,
            availability_zone=cfg.availability_zone,
            cores=min(cores, model.MAX_HOST_CORES),
            memory_mb=min(max(memory_mb, 64), model.MAX_HOST_MEMORY_MB),
            disk_gb=0,
            labels=cfg.labels,
            networks=cfg.networks,
            reserved_cores=cfg.reserved_cores,
            reserved_memory_mb=cfg.reserved_memory_mb,
            cpu_allocation_ratio=cfg.cpu_allocation_ratio,
            ram_allocation_ratio=cfg.ram_allocation_ratio,
        )
    except pydantic.ValidationError as exc:
        p.error("; ".join(_flag_problem(e) for e in exc.errors()))


def _flag_problem(error: Any) -> str:
    loc = error.get("loc") or ()
    flag = {"name": "host-name"}.get(str(loc[0]), str(loc[0]).replace("_", "-")) if loc else None
    msg = str(error["msg"])
    msg = msg[:1].lower() + msg[1:]
    return f"--{flag}: {msg}" if flag else msg


def _host_capacity() -> tuple[int, int]:
    """Cores (as dockerd counts them: the CPUs this process may run on) and MB of memory."""
    cores = len(os.sched_getaffinity(0))
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return cores, memory_mb


if __name__ == "__main__":
    main()
