"""``dockyard server recover``: copy files out of an instance's writable layer or named
volumes on a host, read off that host's disk by its agent (dockerd may be down)."""

from __future__ import annotations

import argparse
import time

from dockyard.cli.client import Api, CliError
from dockyard.cli.runspec import local_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def add_server_verbs(srv: Any, fmt: argparse.ArgumentParser) -> None:
    p = srv.add_parser(
        "recover",
        parents=[fmt],
        help="admins: copy files out of a stopped, dead-host or evacuated instance's disk",
    )
    p.add_argument("name")
    p.add_argument("--host", required=True, help="the host whose disk holds the data")
    p.add_argument("--path", required=True, help="absolute path inside the instance")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", type=local_path, metavar="LOCAL_DIR", help="unpack here")
    where.add_argument(
        "--into",
        metavar="INSTANCE:PATH",
        help="write it into a directory of another instance (any host, running or stopped)",
    )
    p.add_argument("--timeout", type=float, default=300)
    p.set_defaults(run=recover)


def into(spec: str) -> dict[str, str]:
    """INSTANCE:PATH -> the API's ``into``; a host path is refused here already."""
    instance, sep, path = spec.partition(":")
    if not sep or not instance or "/" in instance or not path.startswith("/"):
        raise CliError(
            f"--into {spec!r} must be INSTANCE:PATH, an absolute directory inside another "
            "instance (e.g. web2:/root/recovered); to copy files to this machine use "
            "--to LOCAL_DIR"
        )
    return {"instance": instance, "path": path}


def recover(api: Api, a: argparse.Namespace) -> None:
    body: dict[str, Any] = {"host": a.host, "path": a.path}
    if a.into:
        body["into"] = into(a.into)
    rec = api.post(f"/instances/{a.name}/recoveries", body)
    rec = _wait(api, rec, a.timeout)
    if a.into:
        if a.format == "json":
            import json

            print(json.dumps(rec, indent=2))
        else:
            print(f"recovered {a.path} from {a.host} into {rec['into']} ({rec['size']} bytes)")
        return
    data = api.fetch(f"/recoveries/{rec['id']}/data")
    import hashlib  # here, not at start-up: every `server` command loads this module

    if hashlib.sha256(data).hexdigest() != rec["sha256"]:
        raise CliError("the download does not match the sha256 the agent sent; run it again")
    names = unpack(data, a.to)
    if a.format == "json":
        import json

        print(json.dumps({**rec, "files": names}, indent=2))
        return
    print(
        f"recovered {a.path} from {a.host} into {a.to} ({rec['size']} bytes of tar, "
        f"sha256 {rec['sha256'][:16]}...): {len(names)} entries"
    )


def _wait(api: Api, rec: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while rec["status"] in ("queued", "delivering"):
        if time.monotonic() > deadline:
            who = rec["host"] if rec["status"] == "queued" else f"the agent of {rec['into']}"
            raise CliError(
                f"{who} has not done its part after {timeout:.0f}s: is the agent running? "
                f"(recovery {rec['id']} is {rec['status']}, `dockyard host list`)"
            )
        time.sleep(0.5)
        rec = api.get(f"/recoveries/{rec['id']}")
    if rec["status"] != "done":
        raise CliError(f"could not recover {rec['path']} from {rec['host']}: {rec['error']}")
    return rec


def unpack(data: bytes, dest: Path) -> list[str]:
    """Unpack under ``dest`` (made if missing) as plain data (archives.Data): nothing
    lands outside it, no device or set-id file, owned by whoever runs this; an entry
    that already exists there is refused, never overwritten."""
    import io
    import tarfile

    from dockyard import archives

    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        clash = next((m.name for m in members if (dest / m.name).exists() and not m.isdir()), None)
        if clash is not None:
            raise CliError(f"{dest / clash} already exists; recover into an empty directory")
        try:
            archives.extract(tar, dest, archives.Data())
        except archives.BadArchive as exc:
            raise CliError(f"refused an entry of the recovered tar: it {exc}") from exc
    return [m.name for m in members]
