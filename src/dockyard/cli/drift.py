"""Consistency checks: ``host check``, ``host baseline show|set|unset``."""

from __future__ import annotations

import argparse
import sys

from dockyard.cli.client import Api, CliError
from dockyard.cli.output import emit, table

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DRIFTED = 3  # the exit status of `host check` when anything drifts (1: an error)
CHECK_HELP = (
    "admins: list where hosts differ from the cluster's baseline (declared values, else "
    "what most up hosts report) and where instances differ from their spec. Exit status "
    f"{DRIFTED} when anything drifts, 0 when nothing does, 1 on an error"
)


def add_host_parsers(ho: Any, fmt: argparse.ArgumentParser) -> None:
    p = ho.add_parser("check", parents=[fmt], help=CHECK_HELP, description=CHECK_HELP)
    p.add_argument("name", nargs="?", help="the host to check")
    p.add_argument("--all", action="store_true", help="check every host")
    p.set_defaults(run=check)
    base = ho.add_parser(
        "baseline", help="admins: the cluster's expected host settings"
    ).add_subparsers(dest="baseline_verb", required=True)
    p = base.add_parser(
        "show", parents=[fmt], help="each item's expected value and where it comes from"
    )
    p.set_defaults(run=baseline_show)
    p = base.add_parser(
        "set",
        parents=[fmt],
        help="declare expected values (they win over the majority), e.g. "
        "sysctl.kernel.pid_max=4194304",
    )
    p.add_argument("items", nargs="+", metavar="ITEM=VALUE")
    p.set_defaults(run=baseline_set)
    p = base.add_parser(
        "unset", parents=[fmt], help="forget declared values (the majority decides again)"
    )
    p.add_argument("items", nargs="+", metavar="ITEM")
    p.set_defaults(run=baseline_unset)


def check(api: Api, a: argparse.Namespace) -> None:
    if bool(a.name) == bool(a.all):
        raise CliError("give a host NAME or --all (not both)")
    checks = api.get("/hosts/check") if a.all else [api.get(f"/hosts/{a.name}/check")]
    if a.format == "json":
        emit(checks, a.format, [])
    else:
        _print_checks(checks)
    if any(c["drift"] or c["instances"] for c in checks):
        sys.stdout.flush()
        sys.exit(DRIFTED)


def _print_checks(checks: list[dict[str, Any]]) -> None:
    rows = []
    for c in checks:
        host = c["host"] if c["state"] == "up" else f"{c['host']} (down)"
        rows += [[host, d["item"], d["value"], d["expected"], d["source"]] for d in c["drift"]]
        for inst in c["instances"]:
            rows += [
                [host, f"server {inst['name']}: {d['item']}", d["value"], d["expected"], "spec"]
                for d in inst["items"]
            ]
    if rows:
        table(rows, ["HOST", "ITEM", "VALUE", "EXPECTED", "FROM"])
    else:
        print(f"no drift on {len(checks)} host(s)")
    for c in checks:
        if c["reported_at"] is None:
            print(f"{c['host']}: no baseline reported yet (an older agent, or not started)")
        if c["undecided"]:
            print(
                f"{c['host']}: hosts disagree on {', '.join(c['undecided'])} with no majority; "
                "declare the right value: dockyard host baseline set ITEM=VALUE"
            )


BASELINE_COLUMNS = [
    ("ITEM", lambda b: b["item"]),
    ("VALUE", lambda b: "(undecided)" if b["value"] is None else b["value"]),
    ("FROM", lambda b: b["source"]),
    ("HOSTS", lambda b: b["hosts"]),
]


def baseline_show(api: Api, a: argparse.Namespace) -> None:
    emit(api.get("/hosts/baseline"), a.format, BASELINE_COLUMNS)


def baseline_set(api: Api, a: argparse.Namespace) -> None:
    values = {}
    for pair in a.items:
        item, eq, value = pair.partition("=")
        if not eq or not item:
            raise CliError(f"{pair!r}: write ITEM=VALUE, e.g. sysctl.kernel.pid_max=4194304")
        values[item] = value
    out = api.call("PUT", "/hosts/baseline", json={"values": values})
    emit([b for b in out if b["item"] in values], a.format, BASELINE_COLUMNS)


def baseline_unset(api: Api, a: argparse.Namespace) -> None:
    out = api.call("PUT", "/hosts/baseline", json={"remove": a.items})
    emit([b for b in out if b["item"] in a.items], a.format, BASELINE_COLUMNS)
