"""token and user commands."""

from __future__ import annotations

import argparse
import re

from dockyard.cli.client import Api, CliError
from dockyard.cli.output import emit

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"^\s*(\d{1,9})\s*([smhdwy]?)\s*$")

TOKEN_COLUMNS = [
    ("ID", lambda t: t["id"]),
    ("USER", lambda t: t["user"]),
    ("HOST", lambda t: t["host"]),
    ("CREATED", lambda t: t["created_at"]),
    ("EXPIRES", lambda t: t.get("expires_at") or "never"),
]
USER_COLUMNS = [
    ("NAME", lambda r: r["name"]),
    ("PROJECT", lambda r: r["project"]),
    ("ROLE", lambda r: r["role"]),
    ("STATE", lambda r: "disabled" if r.get("disabled") else "enabled"),
]


def parse_duration(text: str) -> int:
    """Seconds in ``30d``, ``12h``, ``90m``, ``1y`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise CliError(f"--expires {text!r}: write a duration like 30d, 12h, 90m or 1y")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def token_create(api: Api, a: argparse.Namespace) -> None:
    body = {"expires_in": parse_duration(a.expires)} if a.expires else {}
    out = api.post("/tokens", body)
    print(out["token"])


def user_create(api: Api, a: argparse.Namespace) -> None:
    out = api.post("/users", {"name": a.name, "project": a.project, "role": a.role})
    print(out["token"])


def user_set(api: Api, name: str, change: dict[str, Any], done: str) -> None:
    api.call("PATCH", f"/users/{name}", json=change)
    print(f"{done} user {name}")


def add_parsers(sub: argparse._SubParsersAction, fmt: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    tk = sub.add_parser("token", help="your API tokens").add_subparsers(dest="verb", required=True)
    p = tk.add_parser("create", help="a new token for yourself; prints it once")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 30d, 12h, 1y (default: never)")
    p.set_defaults(run=token_create)
    p = tk.add_parser("list", parents=[fmt], help="your tokens (admins: all), with expiry")
    p.set_defaults(run=lambda api, a: emit(api.get("/tokens"), a.format, TOKEN_COLUMNS))
    p = tk.add_parser("delete", help="revoke a token, on every server at once")
    p.add_argument("name", metavar="ID")
    p.set_defaults(
        run=lambda api, a: (api.delete(f"/tokens/{a.name}"), print(f"deleted token {a.name}"))
    )

    us = sub.add_parser("user", help="users").add_subparsers(dest="verb", required=True)
    p = us.add_parser("create", help="create a user; prints its token")
    p.add_argument("name")
    p.add_argument("--project", required=True)
    p.add_argument("--role", choices=["admin", "member", "reader"], default="member")
    p.set_defaults(run=user_create)
    p = us.add_parser("list", parents=[fmt])
    p.set_defaults(run=lambda api, a: emit(api.get("/users"), a.format, USER_COLUMNS))
    p = us.add_parser("disable", help="admins: refuse the user's tokens, at once")
    p.add_argument("name")
    p.set_defaults(run=lambda api, a: user_set(api, a.name, {"disabled": True}, "disabled"))
    p = us.add_parser("enable", help="admins: accept the user's tokens again")
    p.add_argument("name")
    p.set_defaults(run=lambda api, a: user_set(api, a.name, {"disabled": False}, "enabled"))
    p = us.add_parser("set-role", help="admins: make a user reader, member or admin")
    p.add_argument("name")
    p.add_argument("role", choices=["admin", "member", "reader"])
    p.set_defaults(
        run=lambda api, a: user_set(api, a.name, {"role": a.role}, "changed the role of")
    )
