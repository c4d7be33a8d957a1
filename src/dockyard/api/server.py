"""``dockyard-server``: run the API, or initialise a database."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import uvicorn

from dockyard import logs
from dockyard.api import monitoring_config
from dockyard.api.app import GB, MB, create_app
from dockyard.api.monitoring import keep_token, metrics_ca
from dockyard.api.registry import RegistrySettings
from dockyard.db import identity, monitoring
from dockyard.db.builds import Limits
from dockyard.db.session import HOST_DOWN_AFTER, Database
from dockyard.images import logins
from dockyard.model.builds import BUILD_TIMEOUT_DEFAULT
from dockyard.monitor.setup import Setup


def default_db_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'dockyard.db'}"


def prepare_state_dir(state_dir: Path, db_url: str | None = None) -> None:
    """The state dir 0700; a SQLite database (token hashes) and its -wal/-shm 0600.

    An existing directory or file is tightened too. SQLite gives the -wal and
    -shm files the database file's mode, so creating that one 0600 covers them.
    """
    old = os.umask(0o077)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
        path = _sqlite_path(db_url or default_db_url(state_dir))
        if path is None:
            return
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        for name in (path, path + "-wal", path + "-shm", path + "-journal"):
            if os.path.exists(name):
                os.chmod(name, 0o600)
    finally:
        os.umask(old)


def _sqlite_path(url: str) -> str | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix + ":memory:":
        return None
    return url[len(prefix) :].split("?", 1)[0] or None


def init(db: Database) -> str | None:
    """Migrate to head and create the admin user; return its token on first run."""
    db.migrate()
    with db.session() as s:
        return identity.bootstrap(s)


def _monitoring_token(db: Database, files: list[Path]) -> None:
    """The cloud's monitoring token, made on the first start and kept in ``files``:
    STATE_DIR/monitoring.token (0600) for Prometheus (monitor/README.md), and the
    managed Prometheus's credentials file when there is one (copied on every start)."""
    with db.session() as s:
        token = monitoring.ensure_token(s)
    if token:
        print(f"created the monitoring token; it is in {files[0]}", file=sys.stderr)
    elif files[0].is_file():
        token = files[0].read_text().strip()
    if token:
        keep_token(files, token)


def _parser() -> argparse.ArgumentParser:
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
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=2.0,
        help="largest JSON request body, checked before authentication (default 2)",
    )
    p.add_argument(
        "--max-upload-gb",
        type=float,
        default=20.0,
        help="largest image upload, streamed to disk (default 20)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="open connections served at once (each may buffer up to --max-body-mb "
        "before it is authenticated); beyond it new requests get 503",
    )
    p.add_argument(
        "--watch-reread",
        type=float,
        default=1.0,
        help="seconds between long polls' re-reads of the database, besides being woken "
        "by changes (default 1; several servers on PostgreSQL wake each other at once)",
    )
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    p.add_argument(
        "--tls-ca",
        type=Path,
        help="the CA certificate that signed --tls-cert; joining hosts fetch and pin it",
    )
    p.add_argument(
        "--host-down-after",
        type=float,
        default=HOST_DOWN_AFTER.total_seconds(),
        metavar="SECONDS",
        help="a host that sent no heartbeat for this long is down: no new instances, its "
        "instances' power state unknown (default %(default)g; agents beat every 10 s, "
        "or three times within a shorter value)",
    )
    p.add_argument(
        "--registry",
        metavar="URL",
        default=os.environ.get("DOCKYARD_REGISTRY"),
        help="the primary registry (http(s)://HOST:PORT; default $DOCKYARD_REGISTRY): image "
        "uploads are pushed there and hosts pull them by digest; without it images travel "
        "through this server",
    )
    p.add_argument(
        "--registry-root",
        type=Path,
        default=os.environ.get("DOCKYARD_REGISTRY_ROOT"),
        help="the directory of that registry when it runs beside the server (dockyard up; "
        "default $DOCKYARD_REGISTRY_ROOT): image delete then garbage-collects its blobs",
    )
    p.add_argument(
        "--registry-logins",
        type=Path,
        default=os.environ.get("DOCKYARD_REGISTRY_LOGINS"),
        metavar="FILE",
        help="the registries' logins (JSON, 0600, made by `dockyard up` and the lab; default "
        "$DOCKYARD_REGISTRY_LOGINS): the server pushes with one, agents pull with the other",
    )
    p.add_argument(
        "--registry-ca",
        type=Path,
        default=os.environ.get("DOCKYARD_REGISTRY_CA"),
        metavar="FILE",
        help="the CA an https registry's certificate is from (default $DOCKYARD_REGISTRY_CA, "
        "else --tls-ca)",
    )
    p.add_argument(
        "--migration-timeout",
        type=float,
        default=float(os.environ.get("DOCKYARD_MIGRATION_TIMEOUT") or 120),
        metavar="SECONDS",
        help="a cold migration whose snapshot, or whose start on the target, takes longer "
        "is rolled back: the instance runs on its source again (default "
        "$DOCKYARD_MIGRATION_TIMEOUT, else 120)",
    )
    p.add_argument(
        "--snapshot-min-every",
        type=int,
        default=int(os.environ.get("DOCKYARD_SNAPSHOT_MIN_EVERY") or 900),
        metavar="SECONDS",
        help="the shortest period of periodic snapshots members may ask for (default "
        "$DOCKYARD_SNAPSHOT_MIN_EVERY, else 900: 15 minutes; tests set less)",
    )
    p.add_argument(
        "--prometheus-url",
        default=os.environ.get("PROMETHEUS_URL") or None,
        metavar="URL",
        help="the Prometheus that scrapes this cloud, for `server stats` and `host stats` "
        "(default $PROMETHEUS_URL)",
    )
    p.add_argument(
        "--alertmanager-url",
        default=os.environ.get("ALERTMANAGER_URL") or None,
        metavar="URL",
        help="the Alertmanager `dockyard alert list|silence|ack` reach through this server "
        "(default $ALERTMANAGER_URL)",
    )
    p.add_argument(
        "--monitoring-setup",
        type=Path,
        metavar="FILE",
        help="the Prometheus and Alertmanager run beside this server (JSON, written by "
        "`dockyard up --monitoring` and the lab; monitor/setup.py): the server writes "
        "their configuration next to FILE and reloads them when it changes",
    )
    p.add_argument(
        "--build-memory-mb",
        type=int,
        default=int(os.environ.get("DOCKYARD_BUILD_MEMORY_MB") or 2048),
        metavar="MB",
        help="the memory limit of each build on a build host (default "
        "$DOCKYARD_BUILD_MEMORY_MB, else 2048)",
    )
    p.add_argument(
        "--build-timeout",
        type=int,
        default=int(os.environ.get("DOCKYARD_BUILD_TIMEOUT") or BUILD_TIMEOUT_DEFAULT),
        metavar="SECONDS",
        help="a build running longer fails as timed out (default $DOCKYARD_BUILD_TIMEOUT, "
        f"else {BUILD_TIMEOUT_DEFAULT})",
    )
    p.add_argument("--log-level", default="info")
    return p


def main(argv: list[str] | None = None) -> None:
    p = _parser()
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    for flag in ("tls_cert", "tls_key", "tls_ca", "registry_logins", "registry_ca"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            p.error(f"--{flag.replace('_', '-')} {path}: no such file")
    if not 0.05 <= args.watch_reread <= 60:
        p.error("--watch-reread: give 0.05 to 60 seconds")
    if not 1 <= args.max_connections <= 100_000:
        p.error("--max-connections: give 1 to 100000")
    if not 1 <= args.migration_timeout <= 86_400:
        p.error("--migration-timeout: give 1 to 86400 seconds")
    if not 60 <= args.snapshot_min_every <= 86_400:
        p.error("--snapshot-min-every: give 60 to 86400 seconds")
    if not 64 <= args.build_memory_mb <= 1 << 20:
        p.error("--build-memory-mb: give 64 to 1048576")
    if not 10 <= args.build_timeout <= 86_400:
        p.error("--build-timeout: give 10 to 86400 seconds")
    if not 0.1 <= args.host_down_after <= 86_400:
        p.error("--host-down-after: give 0.1 to 86400 seconds")
    metrics_ca(args.tls_ca)  # beside the cloud's CA (a cloud made before it gets one now)
    setup = _monitoring(p, args.monitoring_setup)
    logs.configure(args.log_level)
    os.umask(0o077)  # what the server writes (database, images, token) is its own
    prepare_state_dir(args.state_dir, args.db)
    db = Database(
        args.db or default_db_url(args.state_dir),
        host_down_after=timedelta(seconds=args.host_down_after),
    )
    token = init(db)
    if token:
        path = args.state_dir / "admin.token"
        path.touch(mode=0o600)
        path.write_text(token + "\n")
        print(f"created the admin user; its token is in {path}", file=sys.stderr)
    host, _, port = args.listen.rpartition(":")
    app = create_app(
        db,
        args.state_dir,
        args.placement,
        max_body=int(args.max_body_mb * MB),
        max_upload=int(args.max_upload_gb * GB),
        watch_reread=args.watch_reread,
        ca_file=args.tls_ca,
        registry=_registry(args) if args.registry else None,
        migration_timeout=args.migration_timeout,
        snapshot_min_every=args.snapshot_min_every,
        prometheus_url=args.prometheus_url or (setup.prometheus_url if setup else None),
        alertmanager_url=args.alertmanager_url or (setup.alertmanager_url if setup else None),
        alerts_changed=_resync(setup, db),
        build_limits=Limits(args.build_memory_mb, args.build_timeout),
    )
    app.state.monitoring = setup
    if setup is not None:
        app.state.monitoring_token_files.append(setup.token_file)
        monitoring_config.sync(setup, db)
    _monitoring_token(db, app.state.monitoring_token_files)
    uvicorn.run(
        app,
        host=host or "127.0.0.1",
        port=int(port),
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=3,
        # the client's address is the socket's: an X-Forwarded-For from loopback must not
        # choose the address a host's /metrics certificate is signed for
        proxy_headers=False,
        limit_concurrency=args.max_connections,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )


def _resync(setup: Setup | None, db: Database) -> Callable[[], None] | None:
    """After a receiver or route change: re-render and reload the managed Alertmanager."""
    if setup is None:
        return None
    managed = setup

    def resync() -> None:
        monitoring_config.sync(managed, db)

    return resync


def _monitoring(p: argparse.ArgumentParser, path: Path | None) -> Setup | None:
    if path is None:
        return None
    try:
        return Setup.read(path)
    except ValueError as exc:
        p.error(f"--monitoring-setup {exc}")


def _registry(args: argparse.Namespace) -> RegistrySettings:
    ca = args.registry_ca or args.tls_ca
    try:
        found = logins.read(args.registry_logins) if args.registry_logins else None
    except ValueError as exc:
        raise SystemExit(f"error: --registry-logins: {exc}") from exc
    return RegistrySettings(
        args.registry, args.registry_root, str(ca) if ca else None, logins=found
    )


if __name__ == "__main__":
    main()
