"""What an instance runs beyond its image, from the command line: --env, --config-file
and the health check flags, shared by ``stack create|deploy`` (and ``server create``
later). Standard library only (start-up time); the server checks the rest."""

from __future__ import annotations

import argparse

from dockyard.cli.client import CliError

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def local_path(text: str) -> Path:
    """argparse's ``type`` for a local file or directory: pathlib (with urllib.parse
    and ipaddress, ~4 ms) is imported only by a command that is given one."""
    from pathlib import Path

    return Path(text)


def add_arguments(p: argparse.ArgumentParser, health: bool = True) -> None:
    p.add_argument(
        "--env", action="append", default=None, metavar="K=V", help="an environment variable "
        "(repeatable)"
    )  # fmt: skip
    p.add_argument(
        "--config-file",
        action="append",
        default=None,
        metavar="LOCAL:PATH",
        help="write this local file at PATH in the instance before it starts (repeatable)",
    )
    if not health:
        return
    check = p.add_mutually_exclusive_group()
    check.add_argument(
        "--health-http", metavar="PORT/PATH", help="GET http://IP:PORT/PATH: 2xx/3xx"
    )
    check.add_argument("--health-tcp", metavar="PORT", type=int, help="a TCP connect to IP:PORT")
    check.add_argument("--health-cmd", metavar="CMD", help="a command inside that exits 0")
    check.add_argument("--no-health", action="store_true", help="no health check")


def env(pairs: list[str] | None) -> dict[str, str] | None:
    if pairs is None:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--env {pair!r}: write it as NAME=VALUE")
        out[key] = value
    return out


def files(specs: list[str] | None) -> list[dict[str, Any]] | None:
    if specs is None:
        return None
    out = []
    for spec in specs:
        local, sep, path = spec.rpartition(":")
        if not sep or not local or not path:
            raise CliError(f"--config-file {spec!r}: write it as LOCAL_FILE:/path/in/instance")
        try:
            source = local_path(local)
            content = source.read_text()
            mode = source.stat().st_mode & 0o777  # an executable script stays one
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"--config-file {spec!r}: cannot read {local}: {exc}") from exc
        out.append({"path": path, "content": content, "mode": mode})
    return out


def health(a: argparse.Namespace) -> tuple[bool, dict[str, Any] | None]:
    """(whether a check was given at all, the check or None for --no-health)."""
    if getattr(a, "no_health", False):
        return True, None
    if a.health_http:
        port, slash, path = a.health_http.partition("/")
        if not port.isdigit():
            raise CliError(
                f"--health-http {a.health_http!r}: write it as PORT/PATH, e.g. 8080/healthz"
            )
        return True, {"kind": "http", "port": int(port), "path": "/" + path if slash else "/"}
    if a.health_tcp is not None:
        return True, {"kind": "tcp", "port": a.health_tcp}
    if a.health_cmd:
        import shlex

        return True, {"kind": "cmd", "command": shlex.split(a.health_cmd)}
    return False, None


def body(a: argparse.Namespace) -> dict[str, Any]:
    """The env, files and health_check fields the flags give (those not given: absent)."""
    out: dict[str, Any] = {}
    if (e := env(a.env)) is not None:
        out["env"] = e
    if (f := files(a.config_file)) is not None:
        out["files"] = f
    given, check = health(a)
    if given:
        out["health_check"] = check
    return out
