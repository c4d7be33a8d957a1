"""``dockyard volume ...``: a project's named volumes (fixed-size filesystems)."""

from __future__ import annotations

import argparse

from dockyard import units
from dockyard.cli.client import Api, CliError
from dockyard.cli.output import emit

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VOLUME_COLUMNS = [
    ("NAME", lambda v: v["name"]),
    ("SIZE_MB", lambda v: v["size_mb"]),
    ("STATUS", lambda v: v["status"]),
    ("HOST", lambda v: v["host"]),
    ("ATTACHED_TO", lambda v: ",".join(v["attached_to"]) or "-"),
    ("PROJECT", lambda v: v["project"]),
]


def size_mb(text: str) -> int:
    """``1GB``, ``512MB`` -> MiB (sizes as docker reads them: 1GB = 1024 MiB)."""
    try:
        size = units.parse_size(text)
    except ValueError as exc:
        raise CliError(f"--size: {exc}") from exc
    if size < 2**20 or size % 2**20:
        raise CliError(f"--size {text}: give whole megabytes, e.g. 512MB or 1GB")
    return size // 2**20


def create(api: Api, a: argparse.Namespace) -> None:
    vol = api.post("/volumes", {"name": a.name, "size_mb": size_mb(a.size)})
    emit(vol, a.format, VOLUME_COLUMNS)


def delete(api: Api, a: argparse.Namespace) -> None:
    api.delete(f"/volumes/{a.name}")
    print(f"volume {a.name} deleted")


def add_parsers(sub: Any, fmt: argparse.ArgumentParser) -> None:
    vol = sub.add_parser("volume", help="named volumes").add_subparsers(dest="verb", required=True)
    p = vol.add_parser("create", parents=[fmt], help="an empty volume of a fixed size")
    p.add_argument("name")
    p.add_argument("--size", required=True, help="e.g. 512MB or 1GB; enforced by its filesystem")
    p.set_defaults(run=create)
    p = vol.add_parser("list", parents=[fmt])
    p.set_defaults(run=lambda api, a: emit(api.get("/volumes"), a.format, VOLUME_COLUMNS))
    p = vol.add_parser("show", parents=[fmt])
    p.add_argument("name")
    p.set_defaults(run=lambda api, a: emit(api.get(f"/volumes/{a.name}"), a.format, VOLUME_COLUMNS))
    p = vol.add_parser("delete", help="refused while an instance uses it")
    p.add_argument("name")
    p.set_defaults(run=delete)
