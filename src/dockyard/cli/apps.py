"""``dockyard app|stack|release ...``: the PaaS (paas/README.md)."""

from __future__ import annotations

import argparse
import sys
import time

from dockyard.cli import builds, runspec
from dockyard.cli.client import Api, CliError
from dockyard.cli.output import emit, table

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

APP_COLUMNS = [
    ("NAME", lambda a: a["name"]),
    ("STACKS", lambda a: ",".join(a["stacks"]) or "-"),
    ("PROJECT", lambda a: a["project"]),
]
STACK_COLUMNS = [
    ("NAME", lambda s: f"{s['app']}/{s['name']}"),
    ("READY", lambda s: f"{s['ready']}/{s['replicas']}"),
    ("RELEASE", lambda s: s["current_release"]),
    ("STRATEGY", lambda s: s["strategy"]),
    ("DEPLOY", lambda s: _deploy_cell(s["deploy"])),
]
MEMBER_COLUMNS = ["NAME", "HOST", "IP", "RELEASE", "STATUS", "HEALTH", "READY"]
RELEASE_COLUMNS = [
    ("NUMBER", lambda r: r["number"]),
    ("IMAGE", lambda r: r["image"]),
    ("DIGEST", lambda r: (r["digest"] or "-")[:19]),
    ("WHO", lambda r: r["created_by"]),
    ("WHEN", lambda r: r["created_at"]),
    ("RESULT", lambda r: r["result"]),
]
DEPLOY_COLUMNS = [
    ("ID", lambda d: d["id"]),
    ("KIND", lambda d: d["kind"]),
    ("FROM", lambda d: d["from_release"]),
    ("TO", lambda d: d["to_release"]),
    ("STATUS", lambda d: d["status"]),
    ("REASON", lambda d: d["reason"]),
]


def _deploy_cell(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    return f"{d['kind']} {d['from_release'] or '-'}->{d['to_release']} {d['status']}"


def _path(ref: str) -> str:
    app, sep, stack = ref.partition("/")
    if not sep or not app or not stack or "/" in stack:
        raise CliError(f"{ref!r}: name a stack as APP/STACK, e.g. shop/web")
    return f"/apps/{app}/stacks/{stack}"


def show_stack(api: Api, a: argparse.Namespace) -> None:
    st = api.get(_path(a.ref))
    if a.format == "json":
        emit(st, "json", STACK_COLUMNS)
        return
    members, events = st.pop("instances"), st.pop("events")
    st["deploy"] = _deploy_cell(st["deploy"])
    emit(st, "table", STACK_COLUMNS)
    print()
    rows = [
        [m["name"], m["host"] or "-", m["ip"] or "-", str(m["release"]), m["status"],
         m["health"] or "-", "yes" if m["ready"] else "no"]
        for m in members
    ]  # fmt: skip
    table(rows, MEMBER_COLUMNS)
    if events:
        print("\nevents")
        for ev in events:
            print(f"  {ev['time']}  {ev['message']}")


def create_stack(api: Api, a: argparse.Namespace) -> None:
    _, _, app, _, name = _path(a.ref).split("/")
    body = {
        "name": name,
        "image": a.image,
        "flavor": a.flavor,
        "network": a.network,
        "replicas": a.replicas,
        "strategy": a.strategy,
        "max_unavailable": a.max_unavailable,
        "max_surge": a.max_surge,
        "spread": a.spread,
        **runspec.body(a),
    }
    for flag in ("port", "progress_deadline"):
        if getattr(a, flag) is not None:
            body["progress_deadline_s" if flag == "progress_deadline" else flag] = getattr(a, flag)
    st = api.post(f"/apps/{app}/stacks", body)
    if a.wait:
        _follow(api, a, st["deploy"])
    else:
        emit(st, a.format, STACK_COLUMNS)


def deploy(api: Api, a: argparse.Namespace) -> None:
    body = runspec.body(a)
    if a.image:
        body["image"] = a.image
    _follow(api, a, api.post(_path(a.ref) + "/deploys", body))


def rollback(api: Api, a: argparse.Namespace) -> None:
    _follow(api, a, api.post(_path(a.ref) + "/rollback", {"to": a.to}))


def _follow(api: Api, a: argparse.Namespace, d: dict[str, Any]) -> None:
    """Print the deploy; with --wait, its progress until it ends, and an automatic
    rollback's until that ends too (exit 1 unless the deploy succeeded)."""
    if not a.wait:
        emit(d, a.format, DEPLOY_COLUMNS)
        return
    deadline = time.monotonic() + a.timeout
    d = _until_done(api, a, d, deadline)
    st = api.get(_path(a.ref))
    if d["status"] == "rolled-back":
        print(f"rolled back: {d['reason']}", file=sys.stderr)
        if st["deploy"]["kind"] == "auto-rollback":
            _until_done(api, a, st["deploy"], deadline)
    emit(d, a.format, DEPLOY_COLUMNS)
    if d["status"] != "succeeded":
        raise CliError(f"{d['kind']} {d['status']}: {d['reason'] or '-'}")


def _until_done(
    api: Api, a: argparse.Namespace, d: dict[str, Any], deadline: float
) -> dict[str, Any]:
    path, last = _path(a.ref), ""
    while True:
        st = api.get(path)
        d = api.get(f"{path}/deploys/{d['id']}")
        line = f"{d['kind']} to release {d['to_release']}: {st['ready']}/{st['replicas']} ready"
        if line != last:
            print(line, file=sys.stderr)
            last = line
        if d["status"] != "running":
            return d
        if time.monotonic() > deadline:
            raise CliError(
                f"the {d['kind']} still runs after {a.timeout:g} s; "
                f"see `dockyard stack show {a.ref}`"
            )
        time.sleep(0.5)


def endpoints(api: Api, a: argparse.Namespace) -> None:
    ep = api.get(_path(a.ref) + "/endpoints")
    print(render_endpoints(ep, a.format), end="")


def render_endpoints(ep: dict[str, Any], fmt: str) -> str:
    """The stack's ready members as JSON, an HAProxy backend or an nginx upstream."""
    import json

    if fmt == "json":
        return json.dumps(ep, indent=2) + "\n"
    name = f"{ep['app']}_{ep['stack']}".replace("-", "_").replace(".", "_")
    addrs = [e["ip"] + (f":{e['port']}" if e["port"] else "") for e in ep["endpoints"]]
    if fmt == "haproxy":
        lines = [f"backend {name}"] + [
            f"    server {e['instance']} {addr} check"
            for e, addr in zip(ep["endpoints"], addrs, strict=True)
        ]
    else:
        # an upstream with no server is refused by nginx: a closed placeholder keeps it valid
        servers = [f"    server {addr};" for addr in addrs] or ["    server 127.0.0.1:1 down;"]
        lines = [f"# version {ep['version']}", f"upstream {name} {{", *servers, "}"]
    return "\n".join(lines) + "\n"


def add_parsers(sub: Any, fmt: argparse.ArgumentParser) -> None:
    _app_parsers(sub, fmt)
    _stack_parsers(sub, fmt)
    rel = sub.add_parser("release", help="a stack's releases: number, image, who, when, result")
    verbs = rel.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("list", parents=[fmt])
    p.add_argument("ref", metavar="APP/STACK")
    p.set_defaults(
        run=lambda api, a: emit(api.get(_path(a.ref) + "/releases"), a.format, RELEASE_COLUMNS)
    )


def _app_parsers(sub: Any, fmt: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("app", help="apps: named sets of stacks")
    verbs = grp.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("create", parents=[fmt])
    p.add_argument("name")
    p.set_defaults(
        run=lambda api, a: emit(api.post("/apps", {"name": a.name}), a.format, APP_COLUMNS)
    )
    p = verbs.add_parser("list", parents=[fmt])
    p.set_defaults(run=lambda api, a: emit(api.get("/apps"), a.format, APP_COLUMNS))
    p = verbs.add_parser("show", parents=[fmt])
    p.add_argument("name")
    p.set_defaults(run=lambda api, a: emit(api.get(f"/apps/{a.name}"), a.format, APP_COLUMNS))
    p = verbs.add_parser("delete", help="refused while it has stacks; its hooks and builds too")
    p.add_argument("name")
    p.set_defaults(
        run=lambda api, a: (api.delete(f"/apps/{a.name}"), print(f"app {a.name} deleted"))
    )
    builds.hook_parsers(verbs, fmt)


def _wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="follow the deploy to its end")
    p.add_argument("--timeout", type=float, default=900, help="seconds --wait waits")


def _create_parser(verbs: Any, fmt: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("create", parents=[fmt], help="a stack, its release 1 and its instances")
    p.add_argument("ref", metavar="APP/STACK")
    p.add_argument("--image", required=True)
    p.add_argument("--flavor", required=True)
    p.add_argument("--network", required=True)
    p.add_argument("--replicas", type=int, required=True)
    runspec.add_arguments(p)
    p.add_argument("--port", type=int, help="the port endpoints name (default: the check's)")
    p.add_argument("--strategy", choices=["in-place", "surge"], default="in-place")
    p.add_argument("--max-unavailable", default="1", metavar="N|N%")
    p.add_argument("--max-surge", default="1", metavar="N|N%")
    p.add_argument("--spread", choices=["soft", "hard"], default="soft",
                   help="hard: each instance on its own host, or none")  # fmt: skip
    p.add_argument("--progress-deadline", type=int, metavar="SECONDS",
                   help="a deploy step not ready by then rolls back (default 120)")  # fmt: skip
    _wait_flags(p)
    p.set_defaults(run=create_stack)


def _stack_parsers(sub: Any, fmt: argparse.ArgumentParser) -> None:
    grp = sub.add_parser(
        "stack", help="stacks: identical instances of a release, spread over hosts"
    )
    verbs = grp.add_subparsers(dest="verb", required=True)
    _create_parser(verbs, fmt)
    p = verbs.add_parser("list", parents=[fmt])
    p.add_argument("app")
    p.set_defaults(
        run=lambda api, a: emit(api.get(f"/apps/{a.app}/stacks"), a.format, STACK_COLUMNS)
    )
    p = verbs.add_parser("show", parents=[fmt], help="replicas, ready, release, instances")
    p.add_argument("ref", metavar="APP/STACK")
    p.set_defaults(run=show_stack)
    p = verbs.add_parser("delete", help="the stack and its instances")
    p.add_argument("ref", metavar="APP/STACK")
    p.set_defaults(run=lambda api, a: (api.delete(_path(a.ref)), print(f"stack {a.ref} deleted")))
    for verb, run, text in (
        ("deploy", deploy, "a new release rolled out (in place or surge)"),
        ("rollback", rollback, "an earlier release deployed again"),
    ):
        p = verbs.add_parser(verb, parents=[fmt], help=text)
        p.add_argument("ref", metavar="APP/STACK")
        if verb == "deploy":
            p.add_argument("--image")
            runspec.add_arguments(p)
        else:
            p.add_argument("--to", type=int, metavar="RELEASE", help="default: the previous")
        _wait_flags(p)
        p.set_defaults(run=run)
    p = verbs.add_parser("scale", parents=[fmt], help="instances of the current release")
    p.add_argument("ref", metavar="APP/STACK")
    p.add_argument("--replicas", type=int, required=True)
    p.set_defaults(
        run=lambda api, a: emit(
            api.post(_path(a.ref) + "/scale", {"replicas": a.replicas}), a.format, STACK_COLUMNS
        )
    )
    p = verbs.add_parser("endpoints", help="the ready members, for a load balancer")
    p.add_argument("ref", metavar="APP/STACK")
    p.add_argument("-f", "--format", choices=["json", "haproxy", "nginx"], default="json")
    p.set_defaults(run=endpoints)
