"""``dockyard server-group ...``: placement policies for a project's instances."""

from __future__ import annotations

import argparse

from dockyard.cli.client import Api
from dockyard.cli.output import emit

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

POLICIES = ("anti-affinity", "affinity", "soft-anti-affinity", "soft-affinity")
GROUP_COLUMNS = [
    ("NAME", lambda g: g["name"]),
    ("POLICY", lambda g: g["policy"]),
    ("MEMBERS", lambda g: ",".join(g["members"]) or "-"),
    ("HOSTS", lambda g: ",".join(g["hosts"]) or "-"),
    ("PROJECT", lambda g: g["project"]),
]


def create(api: Api, a: argparse.Namespace) -> None:
    group = api.post("/server-groups", {"name": a.name, "policy": a.policy})
    emit(group, a.format, GROUP_COLUMNS)


def delete(api: Api, a: argparse.Namespace) -> None:
    api.delete(f"/server-groups/{a.name}")
    print(f"server group {a.name} deleted")


def add_parsers(sub: Any, fmt: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("server-group", help="server groups: where a set of instances may run")
    verbs = grp.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("create", parents=[fmt], help="an empty group with a placement policy")
    p.add_argument("name")
    p.add_argument(
        "--policy",
        required=True,
        choices=POLICIES,
        help="anti-affinity: each member on its own host; affinity: all on one host; "
        "soft-*: preferred, not required",
    )
    p.set_defaults(run=create)
    p = verbs.add_parser("list", parents=[fmt])
    p.set_defaults(run=lambda api, a: emit(api.get("/server-groups"), a.format, GROUP_COLUMNS))
    p = verbs.add_parser("show", parents=[fmt], help="the group, its members and their hosts")
    p.add_argument("name")
    p.set_defaults(
        run=lambda api, a: emit(api.get(f"/server-groups/{a.name}"), a.format, GROUP_COLUMNS)
    )
    p = verbs.add_parser("delete", help="refused while it has members")
    p.add_argument("name")
    p.set_defaults(run=delete)
