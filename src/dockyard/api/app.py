"""The FastAPI application: routers under /v1, problem+json errors, request ids."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from dockyard import __version__
from dockyard.api import (
    alertmanager,
    alerts,
    apps,
    build_orders,
    builds,
    catalog,
    drift,
    enrolment,
    errors,
    evacuation,
    groups,
    hosts,
    identity,
    instances,
    lifecycle,
    monitoring,
    monitoring_config,
    moves,
    recovery,
    stats,
    volumes,
)
from dockyard.api import registry as registries
from dockyard.api.builds import BuildController
from dockyard.api.deploys import DeployController
from dockyard.api.limits import BodyLimit
from dockyard.api.registry import RegistrySettings
from dockyard.api.request_ids import RequestIds
from dockyard.api.watch import HostWatch
from dockyard.db import notify, registry_gc
from dockyard.db.builds import Limits
from dockyard.db.session import Database

MB, GB = 1 << 20, 1 << 30


# FastAPI tries the routers in this order on every request, each route of each router
# before the next: instances first (a create, its watch, every read of an instance), then
# drift and hosts (the agents' long poll, heartbeats and reports). A router's route that
# also matches a later router's path answers it: tests/unit/test_routes.py lists the
# pairs where that is meant, and fails on any other.
ROUTERS = (
    instances,
    drift,  # before hosts: /hosts/check is not a host called check
    hosts,
    identity,
    enrolment,
    catalog,
    volumes,
    groups,
    apps,
    builds,
    build_orders,
    lifecycle,
    registries,
    moves,
    evacuation,
    recovery,
    stats,
    alerts,  # before alertmanager: /alerts/adapter/{x} wins over /alerts/{fingerprint}/ack
    alertmanager,
    monitoring_config,
    monitoring,
)


def create_app(
    db: Database,
    state_dir: Path,
    placement: str = "spread",
    max_body: int = 2 * MB,
    max_upload: int = 20 * GB,
    watch_reread: float = 1.0,
    ca_file: Path | None = None,
    registry: RegistrySettings | None = None,
    migration_timeout: float = 120.0,
    migration_check_every: float = 2.0,
    snapshot_min_every: int = 900,
    registry_gc_every: float = 5.0,
    prometheus_url: str | None = None,
    alertmanager_url: str | None = None,
    alerts_changed: Callable[[], None] | None = None,
    deploy_check_every: float | None = 1.0,
    build_limits: Limits | None = None,
    build_check_every: float | None = 2.0,
) -> FastAPI:
    """``placement``: ``spread`` puts a new instance on the host with most free RAM,
    ``pack`` on the one with least (that still fits). ``max_body`` bounds JSON
    bodies and ``max_upload`` image uploads, in bytes, before authentication.
    Long polls re-read the database every ``watch_reread`` seconds besides being
    woken by changes made through this server or (PostgreSQL) any other.
    ``ca_file``: the CA certificate joining hosts fetch and pin (GET /v1/ca).
    A migration that makes no progress for ``migration_timeout`` seconds is rolled
    back (checked every ``migration_check_every``; api/moves.py), and periodic
    snapshots are taken then; members may not ask for one more often than every
    ``snapshot_min_every`` seconds (db/schedules.py). A registry beside the server
    (``registry.root``) is garbage-collected after image deletes, once no push is in
    flight (retried every ``registry_gc_every`` seconds; api/registry.py).
    ``prometheus_url``: the Prometheus that scrapes this cloud, asked for the pictures
    of ``server stats`` and ``host stats`` (api/stats.py).
    ``alertmanager_url`` (default $ALERTMANAGER_URL) is where /v1/alerts and its
    silences are proxied (api/alertmanager.py); ``alerts_changed`` is called after a
    receiver or route changed (re-render Alertmanager's configuration and reload it).
    Running deploys take a step every ``deploy_check_every`` seconds and as soon as
    one begins (api/deploys.py; None: only when ``deploy_controller.step()`` is called).
    Builds get ``build_limits`` (memory, timeout); every ``build_check_every`` seconds
    builds past their timeout fail and queued ones go to build hosts that came up
    (api/builds.py; None: only when ``build_controller.step()`` is called)."""
    watch = HostWatch(notify.bus_for(db), watch_reread)
    timeout = timedelta(seconds=migration_timeout)
    checker = moves.MoveChecker(db, watch, timeout, migration_check_every, registry)
    collector = (
        registries.GarbageCollector(db, watch, registry, registry_gc_every)
        if registry and registry.root
        else None
    )

    ram_weight = 1.0 if placement == "spread" else -1.0
    deployer = DeployController(db, watch, deploy_check_every, ram_weight)
    builder = BuildController(db, watch, build_check_every)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watch.start(asyncio.get_running_loop())
        checker.start()
        deployer.start()
        builder.start()
        if collector:
            collector.start()
        yield
        if collector:
            collector.stop()
        builder.stop()
        deployer.stop()
        checker.stop()
        watch.stop()
        db.engine.dispose()

    app = FastAPI(
        title="Dockyard",
        version=__version__,
        lifespan=lifespan,
        description="A private cloud of Docker machine containers with fixed IPs.",
    )
    app.state.db = db
    app.state.watch = watch
    app.state.ram_weight = ram_weight
    app.state.deploy_controller = deployer
    app.state.build_controller = builder
    app.state.build_limits = build_limits or Limits()
    app.state.image_dir = state_dir / "images"
    app.state.max_upload_bytes = max_upload
    app.state.ca_file = ca_file
    app.state.registry = registry  # None: images travel as tarballs through this server
    app.state.migration_timeout = timeout
    app.state.move_checker = checker
    app.state.snapshot_min_every = snapshot_min_every
    app.state.registry_gc = collector
    app.state.prometheus_url = prometheus_url
    app.state.monitoring_token_files = [state_dir / "monitoring.token"]
    app.state.alertmanager_url = alertmanager_url or os.environ.get("ALERTMANAGER_URL")
    app.state.alerts_changed = alerts_changed
    app.state.registry_gate = (
        collector.gate
        if collector
        else registry_gc.PushGate(db, registry.url)
        if registry
        else None
    )
    errors.install(app)

    app.add_middleware(RequestIds)
    # added last, so it runs first: a body too large is refused before anything reads it
    app.add_middleware(BodyLimit, max_body=max_body, max_upload=max_upload)

    for module in ROUTERS:
        app.include_router(module.router, prefix="/v1", responses=errors.RESPONSES)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
