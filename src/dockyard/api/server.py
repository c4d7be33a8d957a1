"""``dockyard-server``: run the API, or initialise a database."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvicorn

from dockyard import logs
from dockyard.api.app import create_app
from dockyard.db import identity
from dockyard.db.session import Database


def default_db_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'dockyard.db'}"


def init(db: Database) -> str | None:
    """Migrate to head and create the admin user; return its token on first run."""
    db.migrate()
    with db.session() as s:
        return identity.bootstrap(s)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="dockyard-server", description=__doc__)
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/dockyard"))
    p.add_argument(
        "--db",
        help="database URL (default: SQLite in the state dir)",
        default=os.environ.get("DOCKYARD_DB_URL"),
    )
    p.add_argument("--listen", default="127.0.0.1:8787", help="HOST:PORT")
    p.add_argument(
        "--placement",
        choices=["spread", "pack"],
        default="spread",
        help="spread instances by free RAM, or pack them onto the fullest host",
    )
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logs.configure(args.log_level)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    db = Database(args.db or default_db_url(args.state_dir))
    token = init(db)
    if token:
        path = args.state_dir / "admin.token"
        path.touch(mode=0o600)
        path.write_text(token + "\n")
        print(f"created the admin user; its token is in {path}", file=sys.stderr)
    host, _, port = args.listen.rpartition(":")
    uvicorn.run(
        create_app(db, args.state_dir, args.placement),
        host=host or "127.0.0.1",
        port=int(port),
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
