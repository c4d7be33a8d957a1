"""network, flavor, image, host, project and quota commands."""

from __future__ import annotations

import argparse
import os
import sys

from dockyard import units
from dockyard.cli import drift, enrolment, evacuation, lifecycle, moves, stats
from dockyard.cli.client import Api, CliError
from dockyard.cli.output import emit, table
from dockyard.cli.runspec import local_path

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
# (pathlib, with urllib.parse, ~4 ms more: local_path imports it when a path is given)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NETWORK_COLUMNS = [
    ("NAME", lambda n: n["name"]),
    ("BRIDGE", lambda n: n["bridge"]),
    ("UPLINK", lambda n: n["uplink"]),
    ("CIDR", lambda n: ",".join(s["cidr"] for s in n["subnets"])),
    ("GATEWAY", lambda n: ",".join(s["gateway"] or "-" for s in n["subnets"])),
    ("HOSTNAME RULE", lambda n: ",".join(s["hostname_rule"] or "-" for s in n["subnets"])),
]
FLAVOR_COLUMNS = [
    ("NAME", lambda f: f["name"]),
    ("VCPUS", lambda f: f["vcpus"]),
    ("MEMORY_MB", lambda f: f["memory_mb"]),
    ("DISK_GB", lambda f: f["disk_gb"]),
    ("CPU", lambda f: "dedicated" if f["dedicated"] else "shared"),
    ("PIDS", lambda f: f["pids_limit"]),
    ("LIMITS", lambda f: ",".join(f"{k}={v}" for k, v in f["limits"].items() if v) or "-"),
]
IMAGE_COLUMNS = [
    ("NAME", lambda i: i["name"]),
    ("OWNER", lambda i: _owner(i)),
    ("SOURCE", lambda i: i["source"]),
    ("REPOSITORY:TAG", lambda i: i["ref"]),
    ("STATUS", lambda i: i["status"]),
    ("SIZE_MB", lambda i: f"{i['size'] / 2**20:.1f}" if i["size"] else "-"),
    ("DIGEST", lambda i: i.get("digest") or "-"),
]
HOST_COLUMNS = [
    ("NAME", lambda h: h["name"]),
    ("AZ", lambda h: h["availability_zone"]),
    ("STATE", lambda h: h["state"] if h["enabled"] else f"{h['state']}, disabled"),
    ("ENABLED", lambda h: h["enabled"]),
    ("VCPUS(used/cores)", lambda h: f"{h['vcpus_used']:g}/{h['cores']}"),
    ("MEMORY_MB(used/total)", lambda h: f"{h['memory_mb_used']}/{h['memory_mb']}"),
    ("DISK_GB(used/total)", lambda h: f"{h['disk_gb_used']}/{h['disk_gb']}"),
    ("PINNED", lambda h: ",".join(h["pinned_cores"]) or "-"),
    ("DOCKER", lambda h: h["docker_version"]),
]


def network_create(api: Api, a: argparse.Namespace) -> None:
    pools = [_pool(p) for p in a.pool or []]
    subnet: dict[str, Any] = {
        "cidr": a.cidr,
        "gateway": a.gateway,
        "pools": pools,
        "dns": a.dns or [],
        "reserved": a.reserved or [],
        "hostname_rule": a.hostname_rule,
    }
    body = {"name": a.name, "bridge": a.bridge, "uplink": a.uplink, "mtu": a.mtu, "subnet": subnet}
    emit(api.post("/networks", body), a.format, NETWORK_COLUMNS)


def _pool(text: str) -> dict[str, str]:
    start, sep, end = text.partition("-")
    if not sep:
        raise CliError(f"--pool {text!r}: write it as START-END, e.g. 198.18.0.10-198.18.0.99")
    return {"start": start.strip(), "end": end.strip()}


def flavor_create(api: Api, a: argparse.Namespace) -> None:
    body = {
        "name": a.name,
        "vcpus": a.vcpus,
        "memory_mb": a.memory,
        "disk_gb": a.disk,
        "dedicated": a.dedicated or a.cpu_policy == "dedicated",
        "pids_limit": a.pids,
        "limits": _limits(a),
    }
    emit(api.post("/flavors", body), a.format, FLAVOR_COLUMNS)


def _limits(a: argparse.Namespace) -> dict[str, Any]:
    """Flavor limits from the CLI's human units; a bad unit is a CliError."""
    sizes = {"disk_read_bps": a.disk_read_bps, "disk_write_bps": a.disk_write_bps}
    rates = {"net_ingress_kbit": a.net_ingress, "net_egress_kbit": a.net_egress}
    out: dict[str, Any] = {
        "cpu_cap": a.cpu_cap,
        "swap_mb": a.swap,
        "disk_read_iops": a.disk_read_iops,
        "disk_write_iops": a.disk_write_iops,
    }
    try:
        out.update({k: units.parse_size(v) for k, v in sizes.items() if v is not None})
        out.update({k: units.parse_rate_kbit(v) for k, v in rates.items() if v is not None})
        if a.net_burst is not None:
            out["net_burst_kb"] = units.parse_size(a.net_burst) // 1024
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return out


def image_import(api: Api, a: argparse.Namespace) -> None:
    if a.rootfs:
        if not a.rootfs.is_file():
            raise CliError(
                f"--rootfs {a.rootfs}: no such file; give a tarball of a root filesystem"
            )
        cmd = a.command.split() if a.command else ["/sbin/init"]
        body = {"name": a.name, "source": "rootfs", "command": cmd, "procview": a.procview}
        image = api.post("/images", body)
        try:
            image = api.upload(f"/images/{image['id']}/file", a.rootfs)
        except CliError:
            api.delete(f"/images/{image['id']}")  # leave no half-imported image behind
            raise
    else:
        cmd = a.command.split() if a.command else None
        image = api.post(
            "/images",
            {
                "name": a.name,
                "source": "docker",
                "ref": a.from_docker,
                "command": cmd,
                "procview": a.procview,
            },
        )
    emit(image, a.format, IMAGE_COLUMNS)


def image_build_demo(a: argparse.Namespace) -> None:
    from dockyard.images import rootfs

    path = rootfs.build(local_path(a.output))
    print(
        f"wrote {path} ({path.stat().st_size // 1024} KiB); import it with "
        f"`dockyard image import demo --rootfs {path}`"
    )


def _cache_dir() -> str:
    """Where base images are kept (a string: argparse makes it a Path when used)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "dockyard", "images")


def image_build_base(a: argparse.Namespace) -> None:
    from dockyard.errors import DockyardError
    from dockyard.images import base

    api = None if a.no_register else Api()
    if api is not None and api.exists(f"/images/{a.name}"):
        raise CliError(f"image {a.name!r} exists; pick another name or delete it first")
    try:
        recipe = base.Recipe(
            name=a.name,
            release=a.release,
            packages=tuple(p for p in (a.packages or "").replace(",", " ").split() if p),
            programs=dict(base.parse_program(spec) for spec in a.program or []),
            mirror=a.mirror,
        )
        built = base.build(recipe, a.cache_dir, log=lambda m: print(m, file=sys.stderr))
    except DockyardError as exc:
        raise CliError(str(exc)) from exc
    cached = "debian from cache" if built.debian_cached else "debian built"
    print(
        f"{built.path} ({built.path.stat().st_size // 2**20} MiB, {built.seconds:.1f} s, {cached}"
        f"{', layer from cache' if built.layer_cached else ''})",
        file=sys.stderr,
    )
    if a.output:
        import shutil

        shutil.copyfile(built.path, a.output)
    if api is None:
        return
    image = api.post(
        "/images",
        {
            "name": a.name,
            "source": "rootfs",
            "command": base.INIT_COMMAND,
            "key_processes": recipe.key_processes(),
        },
    )
    try:
        image = api.upload(f"/images/{image['id']}/file", built.path)
    except CliError:
        api.delete(f"/images/{image['id']}")
        raise
    emit(image, a.format, IMAGE_COLUMNS)


QUOTA_FLAGS = (
    "instances",
    "vcpus",
    "memory_mb",
    "dedicated_cores",
    "ips",
    "volumes",
    "volume_gb",
    "snapshots",
)


def _owner(i: dict[str, Any]) -> str:
    """public, or the project whose snapshot (or migration image) it is."""
    project = i.get("project")
    if not project:
        return "public"
    return f"{project} (migration)" if i.get("kind") == "migration" else project


def image_list(api: Api, a: argparse.Namespace) -> None:
    path = "/images?migrations=true" if a.migrations else "/images"
    emit(api.get(path), a.format, IMAGE_COLUMNS)


def quota_show(api: Api, a: argparse.Namespace) -> None:
    q = api.get(f"/projects/{a.project}/quota" if a.project else "/quota")
    if a.format == "json":
        emit(q, a.format, [])
        return
    print(f"project {q['project']}")
    rows = [
        [r, "unlimited" if u["limit"] is None else str(u["limit"]), str(u["used"])]
        for r, u in q["resources"].items()
    ]
    table(rows, ["RESOURCE", "LIMIT", "USED"])


def quota_set(api: Api, a: argparse.Namespace) -> None:
    body: dict[str, int | None] = {}
    for resource in QUOTA_FLAGS:
        value = getattr(a, resource)
        if value is not None:
            body[resource] = None if value == "unlimited" else _count(resource, value)
    if not body:
        raise CliError(
            "give at least one of " + " ".join(f"--{r.replace('_', '-')}" for r in QUOTA_FLAGS)
        )
    api.call("PATCH", f"/projects/{a.project}/quota", json=body)
    a.format = "table"
    quota_show(api, a)


def _count(resource: str, value: str) -> int:
    if not value.isdigit():
        raise CliError(f"--{resource.replace('_', '-')} {value!r}: give a number or 'unlimited'")
    return int(value)


def host_show(api: Api, a: argparse.Namespace) -> None:
    h = api.get(f"/hosts/{a.name}")
    if a.format == "json":
        emit(h, a.format, [])
        return
    h["state"] = lifecycle.host_state(h)
    resources, pinned = h.pop("resources"), h.pop("pinned_cores")
    emit(h, a.format, [])
    print()
    rows = [
        [name, f"{r['capacity']:g}", f"{r['used']:g}", f"{r['free']:g}"]
        for name, r in resources.items()
    ]
    table(rows, ["RESOURCE", "CAPACITY", "USED", "FREE"])
    print()
    cores = [[str(c), "reserved for the host"] for c in h["reserved_cores"]]
    cores += [[c, f"pinned to {iid}"] for c, iid in pinned.items()]
    table(
        sorted(cores, key=lambda r: int(r[0])) or [["-", "no pinned or reserved cores"]],
        ["CORE", "USE"],
    )


def host_token(api: Api, a: argparse.Namespace) -> None:
    out = api.post("/agent-tokens", {"host": a.name})
    print(out["token"])


def add_parsers(sub: argparse._SubParsersAction, fmt: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    net = sub.add_parser("network", help="datacenter networks and subnets").add_subparsers(
        dest="verb", required=True
    )
    p = net.add_parser("create", parents=[fmt])
    p.add_argument("name")
    p.add_argument("--cidr", required=True)
    p.add_argument("--gateway")
    p.add_argument("--bridge", required=True, help="Linux bridge on each host")
    p.add_argument("--uplink", help="NIC to enslave to the bridge")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--pool", action="append", help="START-END (repeatable)")
    p.add_argument("--dns", action="append")
    p.add_argument("--reserved", action="append")
    p.add_argument("--hostname-rule", help="e.g. 'web{o3}{o4:03d}'")
    p.set_defaults(run=network_create)
    _crud(net, "network", "/networks", NETWORK_COLUMNS, fmt, show=True)

    fl = sub.add_parser("flavor", help="instance sizes").add_subparsers(dest="verb", required=True)
    p = fl.add_parser("create", parents=[fmt])
    p.add_argument("name")
    p.add_argument("--vcpus", type=int, required=True)
    p.add_argument("--memory", type=int, required=True, help="MB")
    p.add_argument("--disk", type=int, default=0, help="GB")
    p.add_argument("--dedicated", action="store_true", help="pin whole cores")
    p.add_argument("--cpu-policy", choices=["shared", "dedicated"], default="shared")
    p.add_argument("--cpu-cap", type=float, help="shared CPU: hard cap in cores, e.g. 0.5")
    p.add_argument("--swap", type=int, default=0, help="MB of swap on top of memory")
    p.add_argument("--pids", type=int, default=1024, help="max tasks in the instance")
    p.add_argument("--disk-read-bps", metavar="SIZE", help="e.g. 50MB (per second)")
    p.add_argument("--disk-write-bps", metavar="SIZE", help="e.g. 10MB (per second)")
    p.add_argument("--disk-read-iops", type=int)
    p.add_argument("--disk-write-iops", type=int)
    p.add_argument("--net-ingress", metavar="RATE", help="towards the instance, e.g. 50mbit")
    p.add_argument("--net-egress", metavar="RATE", help="from the instance, e.g. 50mbit")
    p.add_argument("--net-burst", metavar="SIZE", help="e.g. 64KB (default: 10 ms of rate)")
    p.set_defaults(run=flavor_create)
    _crud(fl, "flavor", "/flavors", FLAVOR_COLUMNS, fmt, show=True)

    im = sub.add_parser("image", help="instance images").add_subparsers(dest="verb", required=True)
    p = im.add_parser("import", parents=[fmt])
    p.add_argument("name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--rootfs", type=local_path, help="tarball of a root filesystem")
    src.add_argument("--from-docker", metavar="REF", help="an image already on the hosts")
    p.add_argument("--command", help="PID 1 (default /sbin/init for a rootfs)")
    p.add_argument(
        "--no-procview",
        dest="procview",
        action="store_false",
        help="instances see the kernel's /proc, not their own view",
    )
    p.set_defaults(run=image_import)
    p = im.add_parser(
        "build-base",
        parents=[fmt],
        help="build a Debian machine-container image (supervisord, sshd, cron, rsyslog, tools)",
    )
    p.add_argument("name")
    p.add_argument("--release", default="bookworm", help="Debian release (default bookworm)")
    p.add_argument("--packages", help="more Debian packages, comma or space separated")
    p.add_argument(
        "--program",
        action="append",
        metavar="NAME=COMMAND",
        help="a program supervisord keeps running, declared a key process (repeatable)",
    )
    p.add_argument("--mirror", help="Debian mirror URL (default: mmdebstrap's)")
    p.add_argument("--cache-dir", type=local_path, default=_cache_dir(), help="default %(default)s")
    p.add_argument("--output", type=local_path, help="also copy the rootfs tarball here")
    p.add_argument(
        "--no-register", action="store_true", help="only build; do not upload to the server"
    )
    p.set_defaults(run=image_build_base, offline=True)
    p = im.add_parser("build-demo", help="write a busybox rootfs tarball")
    p.add_argument("--output", default="demo-rootfs.tar")
    p.set_defaults(run=image_build_demo, offline=True)
    p = im.add_parser("list", parents=[fmt], help="public images and your project's snapshots")
    p.add_argument("--migrations", action="store_true", help="also the images cold migrations made")
    p.set_defaults(run=image_list)
    _crud(im, "image", "/images", IMAGE_COLUMNS, fmt, show=True, listing=False)

    ho = sub.add_parser("host", help="compute hosts").add_subparsers(dest="verb", required=True)
    _crud(ho, "host", "/hosts", HOST_COLUMNS, fmt, show=False, delete=False)
    p = ho.add_parser("show", parents=[fmt], help="capacity, use and pinned cores of a host")
    p.add_argument("name")
    p.set_defaults(run=host_show)
    p = ho.add_parser("token", help="issue an agent token for a host")
    p.add_argument("name")
    p.set_defaults(run=host_token)
    enrolment.add_host_verbs(ho, fmt)
    lifecycle.add_host_parsers(ho, fmt)
    moves.add_host_parsers(ho, fmt)
    evacuation.add_host_verbs(ho, fmt)
    stats.add_host_verbs(ho, fmt)
    drift.add_host_parsers(ho, fmt)

    pr = sub.add_parser("project", help="projects").add_subparsers(dest="verb", required=True)
    p = pr.add_parser("create", parents=[fmt])
    p.add_argument("name")
    p.set_defaults(run=lambda api, a: emit(api.post("/projects", {"name": a.name}), a.format, []))
    _crud(
        pr,
        "project",
        "/projects",
        [("ID", lambda r: r["id"]), ("NAME", lambda r: r["name"])],
        fmt,
        show=False,
        delete=False,
    )

    qu = sub.add_parser("quota", help="project quotas").add_subparsers(dest="verb", required=True)
    p = qu.add_parser("show", parents=[fmt])
    p.add_argument("project", nargs="?", help="default: your own project")
    p.set_defaults(run=quota_show)
    p = qu.add_parser("set", help="admins: set limits (a number, or 'unlimited')")
    p.add_argument("project")
    for resource in QUOTA_FLAGS:
        p.add_argument(f"--{resource.replace('_', '-')}", dest=resource, metavar="N")
    p.set_defaults(run=quota_set)


def _crud(
    sub: Any,
    noun: str,
    path: str,
    columns: Any,
    fmt: argparse.ArgumentParser,
    show: bool,
    delete: bool = True,
    listing: bool = True,
) -> None:
    if listing:
        p = sub.add_parser("list", parents=[fmt])
        p.set_defaults(run=lambda api, a: emit(api.get(path), a.format, columns))
    if show:
        p = sub.add_parser("show", parents=[fmt])
        p.add_argument("name")
        p.set_defaults(run=lambda api, a: emit(api.get(f"{path}/{a.name}"), a.format, columns))
    if delete:
        p = sub.add_parser("delete")
        p.add_argument("name")
        p.set_defaults(
            run=lambda api, a: (api.delete(f"{path}/{a.name}"), print(f"deleted {noun} {a.name}"))
        )
