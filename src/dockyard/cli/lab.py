"""``dockyard lab``: a cloud of several hosts on this machine (src/dockyard/lab/README.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dockyard.cli.client import CliError
from dockyard.cli.output import emit

STATUS_COLUMNS = [
    ("NAME", lambda h: h["name"]),
    ("AZ", lambda h: h["az"]),
    ("STATE", lambda h: h["state"]),
    ("NETNS", lambda h: h["netns"]),
    ("MGMT IP", lambda h: h["mgmt_ip"]),
    ("DOCKERD", lambda h: h["dockerd"] + ("" if h["dockerd_alive"] else " (stopped)")),
    ("AGENT PID", lambda h: h["agent_pid"] if h["agent_alive"] else "-"),
]


def _lab(action: Any) -> Any:
    """Run a dockyard.lab action with its errors as CLI errors."""

    def run(a: argparse.Namespace) -> None:
        from dockyard.lab.procs import LabError

        try:
            action(a)
        except LabError as exc:
            raise CliError(str(exc)) from exc

    return run


def lab_up(a: argparse.Namespace) -> None:
    from dockyard.lab import lab

    azs = [z for z in a.azs.split(",") if z]
    if not azs:
        raise CliError("--azs: give one or more zone names, e.g. az1,az2")
    if a.host_down_after is not None and not 0.1 <= a.host_down_after <= 86_400:
        raise CliError("--host-down-after: give 0.1 to 86400 seconds")
    monitoring = None
    if a.monitoring or a.alert_tuning:
        from dockyard.lab.monitoring import read_tuning

        monitoring = read_tuning(Path(a.alert_tuning) if a.alert_tuning else None)
    built = lab.up(
        Path(a.state_dir), a.hosts, azs, demo=not a.no_demo, host_down_after=a.host_down_after,
        monitoring=monitoring, build_host=a.build_host,
    )  # fmt: skip
    d, first = built.dir, built.hosts[0]
    mon = built.monitoring
    shown = "" if mon is None else f"""
  monitoring:   source {d}/monitoring.env   (Prometheus {mon.prometheus_url}, \
Alertmanager {mon.alertmanager_url})"""
    where = ", ".join(f"{h.name}/{h.az}" for h in built.hosts)
    print(f"""Lab is up: {len(built.hosts)} hosts ({where}).
  API:          {built.url}/v1
  credentials:  source {d}/admin.env{shown}
  network:      lab ({built.data['net_cidr']}) on every host's uplink0; probe: \
nsenter --net=/run/netns/{built.data['probe_ns']} ping IP
  try:          dockyard server create web1 --image demo --flavor small --network lab --wait
  a host:       DOCKER_HOST={first.docker_host} docker ps   (logs in {first.dir})
  status:       dockyard lab status --state-dir {d}
  remove:       dockyard lab down --state-dir {d}""")


def lab_status(a: argparse.Namespace) -> None:
    from dockyard.lab import lab

    emit(lab.status(Path(a.state_dir)), a.format, STATUS_COLUMNS)


def lab_down(a: argparse.Namespace) -> None:
    from dockyard.lab import lab

    if not (Path(a.state_dir) / "lab.json").exists():
        print(f"no lab in {a.state_dir}: nothing to remove")
        return
    left = lab.down(Path(a.state_dir))
    if left:
        raise CliError(f"removed the lab but these cgroups are still busy: {', '.join(left)}")
    print("lab removed")


def lab_host(a: argparse.Namespace) -> None:
    from dockyard.lab import lab

    if a.action == "stop":
        lab.host_stop(Path(a.state_dir), a.name, a.dockerd)
    else:
        lab.host_start(Path(a.state_dir), a.name)


def add_parsers(sub: argparse._SubParsersAction, fmt: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    verbs = sub.add_parser("lab", help="a cloud of several hosts on this machine").add_subparsers(
        dest="verb", required=True
    )
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state-dir", required=True, help="where the lab keeps its state")
    p = verbs.add_parser("up", parents=[state], help="build the lab (daemons stay in background)")
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--azs", default="az1", help="zones, round-robin over hosts (az1,az2)")
    p.add_argument("--no-demo", action="store_true", help="skip the flavor small, image demo")
    p.add_argument(
        "--host-down-after",
        type=float,
        metavar="SECONDS",
        help="the server's --host-down-after (default 30): how soon a stopped host is down",
    )
    p.add_argument(
        "--monitoring",
        action="store_true",
        help="also run Prometheus and Alertmanager with Dockyard's configuration "
        "(DIR/monitoring; their URLs in DIR/monitoring.env)",
    )
    p.add_argument(
        "--alert-tuning",
        metavar="FILE",
        help='implies --monitoring; JSON: {"interval": "15s", "grouping": {"group_wait": '
        '"30s"}, "rules": {"ALERT" or "*": {"threshold": N, "for": "5m"}}}',
    )
    p.add_argument(
        "--build-host",
        action="store_true",
        help="the last host also runs builds (its agent: --builds, its last core reserved "
        "for the host and its builds)",
    )
    p.set_defaults(run=_lab(lab_up), offline=True)
    p = verbs.add_parser("status", parents=[state, fmt], help="the lab's hosts")
    p.set_defaults(run=_lab(lab_status), offline=True)
    p = verbs.add_parser("down", parents=[state], help="remove everything the lab made")
    p.set_defaults(run=_lab(lab_down), offline=True)
    p = verbs.add_parser("host", help="stop or start one lab host").add_subparsers(
        dest="action", required=True
    )
    for action, text in (("stop", "stop its agent (--dockerd: and dockerd)"), ("start", "start")):
        h = p.add_parser(action, parents=[state], help=text)
        h.add_argument("name")
        if action == "stop":
            h.add_argument("--dockerd", action="store_true", help="also stop its dockerd")
        h.set_defaults(run=_lab(lab_host), offline=True, dockerd=False)
