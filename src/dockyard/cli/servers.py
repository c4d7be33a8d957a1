"""``dockyard server ...``: instances, with --wait progress."""

from __future__ import annotations

import argparse
import sys
import time

from dockyard import units
from dockyard.cli import lifecycle, moves, recovery, runspec, stats
from dockyard.cli.client import Api, CliError
from dockyard.cli.output import emit

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import timedelta
    from pathlib import Path
    from typing import Any

SERVER_COLUMNS = [
    ("NAME", lambda s: s["name"]),
    ("IMAGE", lambda s: s["image"]),
    ("IP", lambda s: s["ip"]),
    ("FLAVOR", lambda s: f"{s['flavor']} ({s['vcpus']}C/{s['memory_mb']}M/{s['disk_gb']}G)"),
    ("STATUS", lambda s: s["status"]),
    ("AZ", lambda s: s["availability_zone"]),
    ("HOST", lambda s: s["host"]),
    ("TASK", lambda s: s["task_state"]),
    ("POWER", lifecycle.power),
]
ACTION_COLUMNS = [
    ("ACTION", lambda a: a["action"]),
    ("REQUEST_ID", lambda a: a["request_id"]),
    ("USER", lambda a: a["user"]),
    ("START", lambda a: a["start_time"]),
    ("FINISH", lambda a: a["finish_time"]),
    ("RESULT", lambda a: a["result"]),
    ("MESSAGE", lambda a: a["message"]),
]
SETTLED = {"ACTIVE", "SHUTOFF", "ERROR"}


def show(api: Api, a: argparse.Namespace) -> None:
    server = api.get(f"/instances/{a.name}")
    if a.format == "json":
        emit(server, a.format, SERVER_COLUMNS)
        return
    events = server.pop("events", [])
    drift = server.pop("drift", [])
    schedule = _schedule(server)
    emit(server, a.format, SERVER_COLUMNS)
    print(f"{'snapshots':<18}{schedule}")
    print("drift" + ("" if drift else "              - (the container matches its spec)"))
    for d in drift:
        print(f"  {d['item']}: {d['value']}, expected {d['expected']}")
    print("events" + ("" if events else "             -"))
    if not events:
        return
    from datetime import UTC, datetime  # only events and the snapshot line need it (~2 ms)

    now = datetime.now(UTC).replace(tzinfo=None)
    for ev in events:
        ago = _ago(now - datetime.fromisoformat(ev["time"]).replace(tzinfo=None))
        print(f"  {ev['time'][:19]}  ({ago} ago)  {ev['kind']}: {ev['message']}")


def _schedule(server: dict[str, Any]) -> str:
    """The periodic snapshots, in words (its three fields taken out of ``server``)."""
    every, keep = server.pop("snapshot_every", None), server.pop("snapshot_keep", None)
    last = server.pop("last_snapshot_at", None)
    if not every:
        return "-" if not last else f"off (last periodic {last[:19]})"
    text = f"every {units.format_duration(every)}, keep the last {keep}, "
    if not last:
        return text + "none taken yet"
    from datetime import UTC, datetime

    ago = _ago(datetime.now(UTC).replace(tzinfo=None) - datetime.fromisoformat(last[:19]))
    return text + f"last {last[:19]} ({ago} ago)"


def _period(text: str, flag: str = "--snapshot-every") -> int | None:
    """Seconds from ``6h``, ``90m``, ``1d``; None for ``off``."""
    if text.strip().lower() == "off":
        return None
    try:
        return units.parse_duration(text)
    except ValueError as exc:
        raise CliError(f"{flag} {text!r}: {exc} (or off)") from exc


def update(api: Api, a: argparse.Namespace) -> None:
    """``server update NAME --snapshot-every D|off [--snapshot-keep K]``."""
    body: dict[str, Any] = {}
    if a.snapshot_every is not None:
        body["snapshot_every"] = _period(a.snapshot_every)
    if a.snapshot_keep is not None:
        body["snapshot_keep"] = a.snapshot_keep
    if not body:
        raise CliError("nothing to change; give --snapshot-every D|off and/or --snapshot-keep K")
    emit(api.patch(f"/instances/{a.name}", body), a.format, SERVER_COLUMNS)


def _ago(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{secs // size} {unit}"
    return f"{secs} s"


def create(api: Api, a: argparse.Namespace) -> None:
    body: dict[str, Any] = {
        "name": a.name,
        "image": a.image,
        "flavor": a.flavor,
        "network": a.network,
        "ip": a.ip,
        "volumes": _volumes(a.volume),
        "availability_zone": a.availability_zone,
        "group": a.group,
        "ssh_keys": _ssh_keys(a.ssh_key),
        **runspec.body(a),
    }
    if a.snapshot_every is not None:
        body["snapshot_every"] = _period(a.snapshot_every)
    if a.snapshot_keep is not None:
        if body.get("snapshot_every") is None:
            raise CliError("--snapshot-keep goes with --snapshot-every D (say how often)")
        body["snapshot_keep"] = a.snapshot_keep
    server, version = api.versioned("POST", "/instances", body)
    if a.wait:
        server = wait(api, server["id"], a.name, timeout=a.timeout, answer=(server, version))
    emit(server, a.format, SERVER_COLUMNS)
    if server["status"] == "ERROR":
        raise CliError(f"{a.name} is in ERROR: {server['fault']}")


def _ssh_keys(files: list[Path] | None) -> list[str]:
    """Public key lines from each file (an id_*.pub or an authorized_keys file)."""
    keys = []
    for path in files or []:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"--ssh-key {path}: cannot read it ({exc}); give a .pub file") from exc
        if "PRIVATE KEY" in text:
            raise CliError(f"--ssh-key {path} is a private key; give its .pub file instead")
        lines = [ln.strip() for ln in text.splitlines()]
        found = [ln for ln in lines if ln and not ln.startswith("#")]
        if not found:
            raise CliError(f"--ssh-key {path} holds no key; give a .pub file")
        keys += found
    return keys


def _volumes(specs: list[str] | None) -> list[dict[str, Any]]:
    """``NAME:PATH[:ro]`` (a named volume) or ``/HOST/PATH:PATH[:ro]`` (admins only)."""
    out = []
    for spec in specs or []:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise CliError(f"--volume {spec!r}: write NAME:PATH[:ro] (or, admins, HOSTPATH:PATH)")
        source = "host_path" if parts[0].startswith("/") else "volume"
        out.append(
            {source: parts[0], "path": parts[1], "read_only": len(parts) == 3 and parts[2] == "ro"}
        )
    return out


def wait(
    api: Api,
    ident: str,
    label: str,
    timeout: float,
    gone_ok: bool = False,
    answer: tuple[Any, str] = (None, ""),
) -> Any:
    """Follow the instance's watch until it settles (or disappears, for delete), showing
    progress. A server without the watch endpoint (404 on the route) is polled instead.

    ``answer``: the instance as the request that changed it answered, with the version
    of its ETag; the watch starts from that version (one read fewer per --wait)."""
    seen = _Seen(label, timeout, gone_ok)
    hold = 1.0 if seen.tty else WATCH_HOLD  # a terminal's clock ticks once a second
    first, version = answer
    if first is not None and version:
        settled, server = seen.saw(first)
        if settled:
            return server
    else:
        version = ""
    asked = False
    while True:
        wait_s = min(hold, max(0.0, timeout - seen.elapsed()))
        params = {"since": version, "wait": f"{wait_s:.3f}"}
        status, body = api.long_poll(f"/instances/{ident}/watch", params, wait_s)
        if status == 404 and not asked:  # a server without the watch (an older one
            return _poll(api, ident, seen)  # behind the same address, say): poll it
        asked = True
        settled, server = seen.saw(body["instance"] if status == 200 else None)
        if settled:
            return server
        version = body["version"]


WATCH_HOLD = 25.0  # seconds per long poll (the server allows up to 60)


def _poll(api: Api, ident: str, seen: _Seen) -> Any:
    """For servers older than the watch endpoint: read every 50 ms."""
    while True:
        settled, server = seen.saw(api.find(f"/instances/{ident}"))
        if settled:
            return server
        time.sleep(0.05)


class _Seen:
    """What --wait has seen: prints progress, says when to stop, enforces the timeout."""

    def __init__(self, label: str, timeout: float, gone_ok: bool) -> None:
        self.label, self.timeout, self.gone_ok = label, timeout, gone_ok
        self.start, self.last, self.tty = time.monotonic(), "", sys.stderr.isatty()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def saw(self, server: Any) -> tuple[bool, Any]:
        """(settled, the instance); raises CliError on timeout or an unexpected deletion."""
        elapsed, label, tty = self.elapsed(), self.label, self.tty
        if server is None:
            if self.gone_ok:
                _progress(f"{label}: deleted ({elapsed:.1f}s)", tty, final=True)
                return True, None
            raise CliError(f"{label} disappeared while waiting; see `dockyard server list`")
        line = f"{label}: {server['status']}"
        if server["task_state"]:
            line += f" ({server['task_state']})"
        if line != self.last or tty:
            _progress(f"{line} {elapsed:.1f}s", tty)
            self.last = line
        if server["status"] in SETTLED and not server["task_state"] and not self.gone_ok:
            _progress(f"{line} in {elapsed:.2f}s", tty, final=True)
            return True, server
        if elapsed > self.timeout:
            raise CliError(
                f"{label} is still {server['status']} after {self.timeout:.0f}s; "
                "check `dockyard host list` and the agent's log"
            )
        return False, server


def _progress(text: str, tty: bool, final: bool = False) -> None:
    if tty:
        sys.stderr.write("\r\033[K" + text + ("\n" if final else ""))
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def action(verb: str) -> Any:
    def run(api: Api, a: argparse.Namespace) -> None:
        if verb == "delete":
            server, version = api.versioned("DELETE", f"/instances/{a.name}")
        elif verb == "resize":
            body = {"flavor": a.flavor, **({"allow_migrate": True} if a.allow_migrate else {})}
            server, version = api.versioned("POST", f"/instances/{a.name}/resize", body)
        elif verb == "rebuild":
            body = {**({"image": a.image} if a.image else {}), **runspec.body(a)}
            server, version = api.versioned("POST", f"/instances/{a.name}/rebuild", body)
        else:
            server, version = api.versioned("POST", f"/instances/{a.name}/{verb}")
        if server["power_state"] == "unknown" and server["host"]:
            # nothing to wait for: the host's agent carries it out when it is back
            print(
                f"{verb} of {a.name} recorded ({server['status']}); its host "
                f"{server['host']} is down: it is carried out when the host returns"
            )
        elif a.wait:
            after = wait(api, server["id"], a.name, a.timeout, gone_ok=verb == "delete",
                         answer=(server, version))  # fmt: skip
            if after is not None:
                emit(after, a.format, SERVER_COLUMNS)
                if after["status"] == "ERROR" or after["fault"]:
                    raise CliError(f"{a.name}: {after['fault']}")
        else:
            print(f"{verb} of {a.name} requested ({server['status']})")

    return run


def add_parsers(sub: Any, fmt: argparse.ArgumentParser) -> None:
    srv = sub.add_parser("server", help="instances").add_subparsers(dest="verb", required=True)
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="show progress until it settles")
    waiting.add_argument("--timeout", type=float, default=120)
    p = srv.add_parser("create", parents=[fmt, waiting])
    p.add_argument("name")
    p.add_argument("--image", required=True)
    p.add_argument("--flavor", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--ip")
    p.add_argument(
        "--volume",
        action="append",
        metavar="NAME:PATH[:ro]",
        help="a named volume (see `dockyard volume create`) at PATH; a leading / makes it "
        "a host path, for admins only (repeatable)",
    )
    p.add_argument("--availability-zone")
    p.add_argument("--group", help="a server group to join (see `dockyard server-group create`)")
    p.add_argument(
        "--ssh-key",
        action="append",
        type=runspec.local_path,
        metavar="FILE",
        help="OpenSSH public key file whose keys may log in as root (repeatable)",
    )
    _schedule_flags(p)
    runspec.add_arguments(p)
    p.set_defaults(run=create)
    p = srv.add_parser("update", parents=[fmt], help="change its periodic snapshots")
    p.add_argument("name")
    _schedule_flags(p)
    p.set_defaults(run=update)
    p = srv.add_parser("list", parents=[fmt])
    p.set_defaults(run=lambda api, a: emit(api.get("/instances"), a.format, SERVER_COLUMNS))
    p = srv.add_parser("show", parents=[fmt], help="the instance and its recent events")
    p.add_argument("name")
    p.set_defaults(run=show)
    p = srv.add_parser("actions", parents=[fmt], help="the instance's action log")
    p.add_argument("name")
    p.set_defaults(
        run=lambda api, a: emit(api.get(f"/instances/{a.name}/actions"), a.format, ACTION_COLUMNS)
    )
    for verb in ("start", "stop", "reboot", "delete", "resize", "rebuild"):
        p = srv.add_parser(verb, parents=[fmt, waiting])
        p.add_argument("name")
        if verb == "rebuild":
            p.description = (
                "make its container anew (another image, env, files or check), keeping "
                "its identity, IP and volumes; what was written in its root fs is lost"
            )
            p.add_argument("--image", help="default: the same")
            runspec.add_arguments(p)
        if verb == "resize":
            p.add_argument("--flavor", required=True, help="the new flavor (live, same host)")
            p.add_argument(
                "--allow-migrate",
                action="store_true",
                help="admins: if it no longer fits its host, cold-migrate it where it fits",
            )
        p.set_defaults(run=action(verb))
    lifecycle.add_server_parsers(srv, fmt)
    moves.add_server_parsers(srv, fmt)
    recovery.add_server_verbs(srv, fmt)
    stats.add_server_verbs(srv, fmt)


def _schedule_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--snapshot-every",
        metavar="D",
        help="take a snapshot every D (6h, 90m, 1d; off: stop); evacuation rebuilds from "
        "the newest (at least 15m unless the server allows less)",
    )
    p.add_argument(
        "--snapshot-keep", type=int, metavar="K", help="periodic snapshots kept (1-100, default 3)"
    )
