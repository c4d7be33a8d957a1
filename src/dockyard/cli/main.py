"""``dockyard``: every user action, against DOCKYARD_URL with DOCKYARD_TOKEN."""

from __future__ import annotations

import argparse
import sys
from functools import cache  # loaded already: argparse's `re` imports functools
from importlib import import_module

# Every noun, the module under dockyard.cli whose ``add_parsers(sub, fmt)`` adds it with
# its verbs, and its help (the same words as that module's, see tests/unit/test_cli_main.py).
# A command imports and builds only its own module's part: start-up time is the CLI's latency.
NOUNS = {
    "network": ("catalog", "datacenter networks and subnets"),
    "flavor": ("catalog", "instance sizes"),
    "image": ("catalog", "instance images"),
    "host": ("catalog", "compute hosts"),
    "project": ("catalog", "projects"),
    "quota": ("catalog", "project quotas"),
    "server": ("servers", "instances"),
    "server-group": ("groups", "server groups: where a set of instances may run"),
    "token": ("identity", "your API tokens"),
    "user": ("identity", "users"),
    "volume": ("volumes", "named volumes"),
    "app": ("apps", "apps: named sets of stacks"),
    "stack": ("apps", "stacks: identical instances of a release, spread over hosts"),
    "release": ("apps", "a stack's releases: number, image, who, when, result"),
    "build": ("builds", "builds: a commit built into an image, then deployed"),
    "lab": ("lab", "a cloud of several hosts on this machine"),
    "registry": ("registry", "the image registry and each AZ's cache"),
    "migration": ("moves", "instance migrations: where from, where to, downtime"),
    "alert": ("alerts", "alerts: receivers, routes, firing alerts, silences"),
    "monitoring": ("monitoring", "Prometheus and Alertmanager configuration for this cloud"),
}


def _quick_argparse() -> None:
    """Two costs of argparse that every command paid while building its parser, neither
    of them needed to parse:

    - it asks gettext for a translation of each of its words (~120 per command), and
      each ask normalizes the locale and looks for catalogs on disk. The CLI speaks
      English only and argparse's words have no catalog: they are taken as they are.
    - every ``add_argument`` builds a help formatter, and each formatter imports
      ``shutil`` and asks the terminal for its width. Here the width is asked once a
      process, as shutil would (COLUMNS first, then the terminal, else 80).
    """
    argparse._ = lambda message: message  # type: ignore[attr-defined]
    argparse.ngettext = lambda one, many, n: one if n == 1 else many  # type: ignore[attr-defined]
    argparse.HelpFormatter.__init__ = _sized  # type: ignore[method-assign]


_formatter_init = argparse.HelpFormatter.__init__


def _sized(
    self: argparse.HelpFormatter,
    prog: str,
    indent_increment: int = 2,
    max_help_position: int = 24,
    width: int | None = None,
) -> None:
    _formatter_init(self, prog, indent_increment, max_help_position, width or _columns() - 2)


@cache
def _columns() -> int:
    import os

    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser for ``argv``: every noun, but the verbs of ``argv``'s noun only."""
    _quick_argparse()
    p = argparse.ArgumentParser(prog="dockyard", description=__doc__)
    fmt = argparse.ArgumentParser(add_help=False)
    fmt.add_argument("-f", "--format", choices=["table", "json"], default="table")
    sub = p.add_subparsers(dest="noun", required=True)
    up = sub.add_parser("up", help="run an all-in-one cloud on this host (foreground)")
    up.add_argument("--state-dir", default="/var/lib/dockyard")
    up.add_argument("--listen", default="127.0.0.1:8787", help="HOST:PORT of the API")
    up.add_argument(
        "--tls-name",
        action="append",
        help="another DNS name or IP for the server's certificate (repeatable)",
    )
    up.add_argument("--host-name", default=None, help="name of this host (default hostname)")
    up.add_argument("--no-demo", action="store_true", help="skip the demo network/flavor/image")
    up.add_argument("--demo-bridge", default="dyk-demo", help="bridge of the demo network")
    up.add_argument("--demo-cidr", default="198.18.0.0/24", help="subnet of the demo network")
    up.add_argument(
        "--registry-http",
        action="store_true",
        help="run the registry on 127.0.0.1 over plain HTTP (the older all-in-one) instead "
        "of over TLS from the cloud's CA on the API's address",
    )
    up.add_argument(
        "--monitoring",
        action="store_true",
        help="also run Prometheus and Alertmanager with Dockyard's configuration "
        "(STATE_DIR/monitoring; their URLs in STATE_DIR/monitoring.env)",
    )
    up.add_argument(
        "--monitoring-ports",
        metavar="PROM,AM",
        help="their ports on 127.0.0.1 (default: the API's port + 2 and + 3)",
    )
    up.add_argument(
        "--alert-tuning",
        metavar="FILE",
        help='JSON: {"interval": "15s", "grouping": {"group_wait": "30s"}, '
        '"rules": {"ALERT" or "*": {"threshold": N, "for": "5m"}}}',
    )
    up.set_defaults(run=None, offline=True)
    # the top level has no option that takes a value, so the first word is the noun
    wanted = NOUNS.get(next((w for w in argv if not w.startswith("-")), ""), ("", ""))[0]
    for noun, (module, text) in NOUNS.items():
        if module != wanted:
            sub.add_parser(noun, help=text)
        elif noun not in sub.choices:
            import_module(f"dockyard.cli.{module}").add_parsers(sub, fmt)
    return p


def main(argv: list[str] | None = None) -> None:
    """The console script passes no ``argv`` and ends the process fast when done;
    a caller that passes ``argv`` (tests) gets a normal return."""
    as_command = argv is None
    argv = sys.argv[1:] if argv is None else argv
    try:
        _run(argv)
    except BrokenPipeError:  # `dockyard server list | head`: the reader left; not an error
        _reader_left()
        return
    except SystemExit:  # --help, a usage error, `up`: its output is flushed here, not at exit
        if as_command and not _flushed():
            _reader_left()
        raise
    if as_command:
        _exit_now()


def _run(argv: list[str]) -> None:
    args = parser(argv).parse_args(argv)
    from dockyard.cli.client import Api, CliError

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


def _flushed() -> bool:
    try:
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        return False


def _reader_left() -> None:
    """What is still buffered for stdout goes to /dev/null, so the interpreter's last
    flush does not print a BrokenPipeError of its own (Python's documented recipe)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _exit_now() -> None:
    """Done and successful: leave without the interpreter's teardown (clearing every
    imported module, a final garbage collection), which is pure latency for a command
    whose output is all written. Files are closed by the commands that write them."""
    import os

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `dockyard server list | head`: the reader left; not an error
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
