"""Host and instance lifecycle verbs: ``host disable|enable``, ``server reset-state``."""

from __future__ import annotations

import argparse

from dockyard.cli.client import Api
from dockyard.cli.output import emit

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def host_state(h: dict[str, Any]) -> str:
    """One word for the host's liveness, and the admin's reason when it is disabled."""
    if h["enabled"]:
        return str(h["state"])
    return f"{h['state']}, disabled ({h.get('disabled_reason') or 'no reason given'})"


def power(s: dict[str, Any]) -> str:
    """The POWER column: an instance on a down host is marked, not shown as it last was."""
    return "unknown (host down)" if s["power_state"] == "unknown" else str(s["power_state"])


def add_host_parsers(ho: Any, fmt: argparse.ArgumentParser) -> None:
    p = ho.add_parser(
        "disable", parents=[fmt], help="admins: no new instances on the host (its own keep running)"
    )
    p.add_argument("name")
    p.add_argument(
        "--reason", required=True, help="why, shown in `host show` and in refusals (255 chars)"
    )
    p.set_defaults(run=_disable)
    p = ho.add_parser("enable", parents=[fmt], help="admins: the host takes new instances again")
    p.add_argument("name")
    p.set_defaults(run=_enable)


def _disable(api: Api, a: argparse.Namespace) -> None:
    h = api.post(f"/hosts/{a.name}/disable", {"reason": a.reason})
    _said(h, a.format)


def _enable(api: Api, a: argparse.Namespace) -> None:
    _said(api.post(f"/hosts/{a.name}/enable"), a.format)


def _said(h: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        emit(h, fmt, [])
    else:
        print(f"host {h['name']}: {host_state(h)}")


def add_server_parsers(srv: Any, fmt: argparse.ArgumentParser) -> None:
    p = srv.add_parser(
        "reset-state",
        parents=[fmt],
        help="admins: clear a stuck task and set vm_state (recorded in the action log)",
    )
    p.add_argument("name")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--active", dest="vm_state", action="store_const", const="active")
    state.add_argument("--error", dest="vm_state", action="store_const", const="error")
    p.set_defaults(run=_reset_state, vm_state="active")


def _reset_state(api: Api, a: argparse.Namespace) -> None:
    s = api.post(f"/instances/{a.name}/reset-state", {"vm_state": a.vm_state})
    if a.format == "json":
        emit(s, a.format, [])
    else:
        print(f"{s['name']}: vm_state {s['vm_state']}, task cleared ({s['status']})")
