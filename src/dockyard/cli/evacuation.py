"""``dockyard host evacuate|evacuations|release``: rebuild a dead host's instances
elsewhere, follow them, and let go of the data the dead host kept."""

from __future__ import annotations

import argparse
import sys
import time

from dockyard.cli.client import Api, CliError
from dockyard.cli.output import emit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EVACUATION_COLUMNS = [
    ("ID", lambda e: e["id"]),
    ("INSTANCE", lambda e: e["instance"]),
    ("SOURCE", lambda e: e["source"]),
    ("TARGET", lambda e: e["target"]),
    ("STATUS", lambda e: e["status"]),
    ("REBUILT_FROM", lambda e: e["rebuilt_from"]),
    ("SOURCE_DATA", lambda e: e["source_state"] + (", fenced" if e["fenced"] else "")),
]
DONE = {"finished", "error"}


def add_host_verbs(ho: Any, fmt: argparse.ArgumentParser) -> None:
    p = ho.add_parser(
        "evacuate",
        parents=[fmt],
        help="admins: rebuild every instance of a down host on other hosts (same IP)",
    )
    p.add_argument("name")
    p.add_argument("--wait", action="store_true", help="until every rebuild has ended")
    p.add_argument("--timeout", type=float, default=600)
    p.set_defaults(run=evacuate)
    p = ho.add_parser("evacuations", parents=[fmt], help="evacuations away from a host")
    p.add_argument("name")
    p.set_defaults(run=evacuations)
    p = ho.add_parser(
        "release",
        parents=[fmt],
        help="let go of the container and volume data an evacuation kept on its old host",
    )
    p.add_argument("migration", help="the evacuation's id (see `dockyard host evacuations`)")
    p.set_defaults(
        run=lambda api, a: emit(
            api.post(f"/migrations/{a.migration}/release"), a.format, EVACUATION_COLUMNS
        )
    )


def evacuations(api: Api, a: argparse.Namespace) -> None:
    emit(api.get(f"/hosts/{a.name}/evacuations"), a.format, EVACUATION_COLUMNS)


def evacuate(api: Api, a: argparse.Namespace) -> None:
    out = api.post(f"/hosts/{a.name}/evacuate")
    started = list(out["evacuations"])
    if a.wait and started:
        started = _wait(api, a.name, {e["id"] for e in started}, a.timeout)
    if a.format == "json":
        emit({**out, "evacuations": started}, "json", [])
        return
    emit(started, "table", EVACUATION_COLUMNS)
    for e in started:
        print(f"{e['instance']}: {e['note']}")
    for miss in out["unplaced"]:
        print(f"unplaced: {miss['instance']}: {miss['reason']}")
    if any(e["status"] == "error" for e in started):
        raise CliError("some rebuilds failed; see `dockyard host evacuations " + a.name + "`")


def _wait(api: Api, host: str, ids: set[str], timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while True:
        rows = [e for e in api.get(f"/hosts/{host}/evacuations") if e["id"] in ids]
        for e in rows:
            if seen.get(e["id"]) != e["status"]:
                seen[e["id"]] = e["status"]
                print(f"{e['instance']} -> {e['target']}: {e['status']}", file=sys.stderr)
        if all(e["status"] in DONE for e in rows):
            return rows
        if time.monotonic() > deadline:
            raise CliError(
                f"not all rebuilt after {timeout:.0f}s; see `dockyard host evacuations {host}`"
            )
        time.sleep(0.5)
