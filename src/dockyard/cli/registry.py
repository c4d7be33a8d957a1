"""``dockyard registry ...``: the primary registry and each availability zone's cache."""

from __future__ import annotations

import argparse

from dockyard.cli.client import Api, quote
from dockyard.cli.output import emit

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

REGISTRY_COLUMNS = [
    ("AZ", lambda r: r["availability_zone"] or "(all)"),
    ("URL", lambda r: r["url"]),
    ("ROLE", lambda r: "primary" if r["primary"] else "pull-through cache"),
]
IMAGE_COLUMNS = [
    ("REPOSITORY", lambda i: i["repository"]),
    ("TAG", lambda i: i["tag"]),
    ("DIGEST", lambda i: i["digest"]),
    ("SIZE_MB", lambda i: f"{i['size'] / 2**20:.1f}"),
    ("PUSHED", lambda i: i["pushed"] or "-"),
    ("IMAGE", lambda i: i["image"] or "-"),
]


def add(api: Api, a: argparse.Namespace) -> None:
    reg = api.post("/registries", {"availability_zone": a.az, "url": a.url})
    emit(reg, a.format, REGISTRY_COLUMNS)


def remove(api: Api, a: argparse.Namespace) -> None:
    api.delete(f"/registries/{quote(a.az, safe='')}")
    print(f"availability zone {a.az} pulls from the primary registry now")


def images(api: Api, a: argparse.Namespace) -> None:
    path = "/registries/images" + (f"?az={quote(a.az, safe='')}" if a.az else "")
    held = api.get(path)
    emit(held if a.format == "json" else held["images"], a.format, IMAGE_COLUMNS)


def login(api: Api, a: argparse.Namespace) -> None:
    """The registry's login for `docker login` (admins: any login may push and delete)."""
    found = api.get("/registries/login")
    if a.format == "json":
        emit(found, a.format, [])
        return
    registry, user = found["registry"], found["username"]
    print(f"registry: {registry}\nusername: {user}\npassword: {found['password']}")
    print(
        "# docker login reads the password from stdin (a password on a command line "
        "shows in ps):\n"
        f"docker login {registry} --username {user} --password-stdin"
    )


def add_parsers(sub: Any, fmt: argparse.ArgumentParser) -> None:
    reg = sub.add_parser("registry", help="the image registry and each AZ's cache")
    verbs = reg.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser(
        "add",
        parents=[fmt],
        help="register a pull-through cache of the primary (Distribution's proxy mode) for an AZ",
    )
    p.add_argument("--az", required=True, help="the availability zone whose hosts pull from it")
    p.add_argument("url", help="http(s)://HOST:PORT of the cache")
    p.set_defaults(run=add)
    p = verbs.add_parser("remove", help="the AZ's hosts pull from the primary again")
    p.add_argument("--az", required=True)
    p.set_defaults(run=remove)
    p = verbs.add_parser("list", parents=[fmt], help="the primary and every AZ's cache")
    p.set_defaults(run=lambda api, a: emit(api.get("/registries"), a.format, REGISTRY_COLUMNS))
    p = verbs.add_parser(
        "images",
        parents=[fmt],
        help="repository, tag, digest, size, pushed (as the registry holds them)",
    )
    p.add_argument("--az", help="that AZ's cache (only what its hosts pulled); default the primary")
    p.set_defaults(run=images)
    p = verbs.add_parser(
        "login",
        parents=[fmt],
        help="the registry's login and the `docker login` command to use it (admins)",
    )
    p.set_defaults(run=login)
