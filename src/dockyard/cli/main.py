"""``dockyard``: every user action, against DOCKYARD_URL with DOCKYARD_TOKEN."""

from __future__ import annotations

import argparse
import sys

from dockyard.cli import catalog, identity, servers, volumes
from dockyard.cli.client import Api, CliError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dockyard", description=__doc__)
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("-f", "--format", choices=["table", "json"], default="table")
    sub = p.add_subparsers(dest="noun", required=True)
    up = sub.add_parser("up", help="run an all-in-one cloud on this host (foreground)")
    up.add_argument("--state-dir", default="/var/lib/dockyard")
    up.add_argument("--listen", default="127.0.0.1:8787", help="HOST:PORT of the API")
    up.add_argument("--host-name", default=None, help="name of this host (default hostname)")
    up.add_argument("--no-demo", action="store_true", help="skip the demo network/flavor/image")
    up.add_argument("--demo-bridge", default="dyk-demo", help="bridge of the demo network")
    up.add_argument("--demo-cidr", default="198.18.0.0/24", help="subnet of the demo network")
    up.set_defaults(run=None, offline=True)
    catalog.add_parsers(sub, fmt)
    servers.add_parsers(sub, fmt)
    identity.add_parsers(sub, fmt)
    volumes.add_parsers(sub, fmt)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.noun == "up":
            from dockyard.cli.up import up

            sys.exit(up(args))
        if getattr(args, "offline", False):
            args.run(args)
        else:
            args.run(Api(), args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
