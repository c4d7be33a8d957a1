"""``server snapshot|migrate``, ``host drain`` and ``migration list|show``.

--wait follows the image or the migration records (GET every half second) and
prints a line whenever a status changes; a migration that ends in error makes
the command exit 1 with its reason.
"""

from __future__ import annotations

import argparse
import sys
import time

from dockyard.cli.client import Api, CliError, encode_query
from dockyard.cli.output import emit

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MIGRATION_COLUMNS = [
    ("ID", lambda m: m["id"]),
    ("INSTANCE", lambda m: m["instance"]["name"]),
    ("KIND", lambda m: m["kind"]),
    ("SOURCE", lambda m: m["source"]),
    ("TARGET", lambda m: m["target"]),
    ("STATUS", lambda m: m["status"]),
    ("STARTED", lambda m: (m["started_at"] or "")[:19]),
    ("FINISHED", lambda m: (m["finished_at"] or "")[:19] or None),
    ("DOWNTIME", lambda m: None if m["downtime_s"] is None else f"{m['downtime_s']:.2f}s"),
    ("REASON", lambda m: m["reason"]),
]
DONE = ("finished", "error")
POLL = 0.5


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def snapshot(api: Api, a: argparse.Namespace) -> None:
    body = {"image": a.image, "consistent": a.consistent}
    image = api.post(f"/instances/{a.name}/snapshot", body)
    if not a.wait:
        print(f"snapshot of {a.name} requested: image {image['name']} ({image['status']})")
        return
    start = time.monotonic()
    while image["status"] == "queued":
        if time.monotonic() - start > a.timeout:
            raise CliError(f"image {a.image} is still queued after {a.timeout:.0f}s")
        time.sleep(POLL)
        image = api.get(f"/images/{image['id']}")
    if image["status"] != "active":
        fault = api.get(f"/instances/{a.name}")["fault"]
        raise CliError(f"snapshot of {a.name} failed: {fault}")
    _say(f"{a.name}: snapshot {image['name']} active in {time.monotonic() - start:.1f}s")
    emit(image, a.format, [])


def migrate(api: Api, a: argparse.Namespace) -> None:
    mig = api.post(f"/instances/{a.name}/migrate", {"host": a.host, "live": a.live})
    if a.wait:
        mig = follow(api, [mig], a.timeout)[0]
    emit(mig, a.format, MIGRATION_COLUMNS)
    if mig["status"] == "error":
        raise CliError(f"migration of {a.name} failed: {mig['reason']}")


def follow(api: Api, migrations: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Poll each migration until all end, printing every change of status."""
    start, seen = time.monotonic(), {m["id"]: "" for m in migrations}
    current = {m["id"]: m for m in migrations}
    while True:
        for ident, mig in current.items():
            if mig["status"] != seen[ident]:
                seen[ident] = mig["status"]
                _say(f"{_line(mig)} {time.monotonic() - start:.1f}s")
        if all(m["status"] in DONE for m in current.values()):
            return list(current.values())
        if time.monotonic() - start > timeout:
            raise CliError(
                f"migrations still running after {timeout:.0f}s; see `dockyard migration list`"
            )
        time.sleep(POLL)
        for ident, mig in current.items():
            if mig["status"] not in DONE:
                current[ident] = api.get(f"/migrations/{ident}")


def _line(m: dict[str, Any]) -> str:
    where = f"{m['source']} -> {m['target']}"
    line = f"{m['instance']['name']}: {m['status']} ({where})"
    if m["status"] == "finished" and m["downtime_s"] is not None:
        line += f", down {m['downtime_s']:.2f}s"
    if m["status"] == "error":
        line += f": {m['reason']}"
    return line


def drain(api: Api, a: argparse.Namespace) -> None:
    result = api.post(f"/hosts/{a.name}/drain")
    migrations, unplaced = result["migrations"], result["unplaced"]
    if a.format == "json" and not a.wait:
        emit(result, a.format, [])
        return
    _say(f"host {a.name} disabled (draining): {len(migrations)} migrating, {len(unplaced)} staying")
    for u in unplaced:
        _say(f"{u['instance']['name']}: stays on {a.name}: {u['reason']}")
    if a.wait and migrations:
        migrations = follow(api, migrations, a.timeout)
    if a.format == "json":
        emit({**result, "migrations": migrations}, a.format, [])
    else:
        emit(migrations, a.format, MIGRATION_COLUMNS)
    failed = [m for m in migrations if m["status"] == "error"]
    if a.wait and (failed or unplaced):
        raise CliError(
            f"host {a.name} still holds {len(failed) + len(unplaced)} instance(s): "
            + ", ".join(x["instance"]["name"] for x in [*failed, *unplaced])
        )


def list_migrations(api: Api, a: argparse.Namespace) -> None:
    query = {k: v for k, v in (("instance", a.server), ("host", a.host)) if v}
    path = "/migrations" + (f"?{encode_query(query)}" if query else "")
    emit(api.get(path), a.format, MIGRATION_COLUMNS)


def _waiting(default_timeout: float) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--wait", action="store_true", help="show progress until it ends")
    p.add_argument("--timeout", type=float, default=default_timeout)
    return p


def add_server_parsers(srv: Any, fmt: argparse.ArgumentParser) -> None:
    p = srv.add_parser(
        "snapshot",
        parents=[fmt, _waiting(600)],
        help="commit the instance's root fs and push it as a new image",
    )
    p.add_argument("name")
    p.add_argument("--image", required=True, help="the new image's name")
    p.add_argument(
        "--consistent", action="store_true", help="stop it for the commit, then start it again"
    )
    p.set_defaults(run=snapshot)
    p = srv.add_parser(
        "migrate",
        parents=[fmt, _waiting(600)],
        help="admins: cold-migrate to another host (same IP, MAC, hostname, data)",
    )
    p.add_argument("name")
    p.add_argument("--host", help="the target host (default: the scheduler picks)")
    p.add_argument("--live", action="store_true", help="live (CRIU): not available here")
    p.set_defaults(run=migrate)


def add_host_parsers(ho: Any, fmt: argparse.ArgumentParser) -> None:
    p = ho.add_parser(
        "drain",
        parents=[fmt, _waiting(1800)],
        help="admins: disable the host and migrate every instance away",
    )
    p.add_argument("name")
    p.set_defaults(run=drain)


def add_parsers(sub: Any, fmt: argparse.ArgumentParser) -> None:
    mi = sub.add_parser("migration", help="instance migrations: where from, where to, downtime")
    verbs = mi.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("list", parents=[fmt])
    p.add_argument("--server", help="only this instance's (name or id)")
    p.add_argument("--host", help="only those from or to this host")
    p.set_defaults(run=list_migrations)
    p = verbs.add_parser("show", parents=[fmt])
    p.add_argument("id")
    p.set_defaults(run=lambda api, a: emit(api.get(f"/migrations/{a.id}"), a.format, []))
