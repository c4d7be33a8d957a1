"""``host add`` and ``host remove``: a new machine joins with a one-time token; a
host leaves once nothing lives on it."""

from __future__ import annotations

import argparse

from dockyard.cli.client import Api
from dockyard.cli.identity import parse_duration
from dockyard.cli.output import emit

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def host_add(api: Api, a: argparse.Namespace) -> None:
    body: dict[str, Any] = {"host": a.name, "availability_zone": a.az}
    if a.expires:
        body["expires_in"] = parse_duration(a.expires)
    out = api.post("/join-tokens", body)
    command = join_command(api.url, out["token"], out["ca_hash"])
    if a.format == "json":
        emit({**out, "command": command}, "json", [])
        return
    print(
        f"host {out['host']} (zone {out['availability_zone']}) may join until "
        f"{out['expires_at']} UTC, once. On the new machine, as root:\n\n  {command}\n"
    )
    if not api.url.startswith("https://") or out["ca_hash"] is None:
        print(
            f"note: {api.url} is not served over TLS with a CA, and hosts join only over "
            "https; run `dockyard up --listen ADDRESS:PORT` on an address they reach"
        )


def join_command(url: str, token: str, ca_hash: str | None) -> str:
    return f"scripts/setup --join {url} --token {token} --ca-hash {ca_hash or 'sha256:NONE'}"


def host_remove(api: Api, a: argparse.Namespace) -> None:
    removed = api.delete(f"/hosts/{a.name}")
    print(removed["detail"])


def add_host_verbs(ho: Any, fmt: argparse.ArgumentParser) -> None:
    p = ho.add_parser(
        "add", parents=[fmt], help="let a new machine join: print the command to run there"
    )
    p.add_argument("name")
    p.add_argument("--az", default="nova", help="its availability zone (default nova)")
    p.add_argument("--expires", metavar="DURATION", help="e.g. 30m, 12h (default 1h)")
    p.set_defaults(run=host_add)
    p = ho.add_parser("remove", help="remove a host with nothing on it; revoke its token")
    p.add_argument("name")
    p.set_defaults(run=host_remove)
