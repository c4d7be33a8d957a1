"""Prometheus's and Alertmanager's configuration, rendered by the server.

    GET /v1/monitoring/config/{prometheus|rules|alertmanager}   (admins)
        the files for a user's own Prometheus and Alertmanager
        (`dockyard monitoring config --prometheus|--rules|--alertmanager`)
    sync(setup, db)
        with ``dockyard-server --monitoring-setup FILE`` (dockyard up --monitoring,
        the lab): the same files written into the setup's directory at start and
        whenever what they say changes, then POST /-/reload to the Prometheus or
        Alertmanager whose file changed

Receivers and routes come from the database (`dockyard alert receiver|route`,
:func:`receivers_and_routes`); after a change commits the server's ``alerts_changed``
(api/server.py: sync, with a managed setup) re-renders and reloads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from dockyard.api.deps import Admin
from dockyard.db import alerts as alerts_db
from dockyard.db.session import Database
from dockyard.monitor import config, receivers, rules, yamltext
from dockyard.monitor.setup import Setup

log = logging.getLogger(__name__)
router = APIRouter(tags=["monitoring"])


class YamlResponse(PlainTextResponse):
    media_type = "text/yaml"


Kind = Literal["prometheus", "rules", "alertmanager"]
FilePath = Annotated[str | None, Query(max_length=1024, pattern=r"^/[^\x00-\x1f\x7f]*$")]


def receivers_and_routes(
    db: Database, server_url: str, ca_file: str | None
) -> tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]:
    """Alertmanager receivers and child routes from the database (`dockyard alert
    receiver|route`, monitor/receivers.py); IM and SMS receivers post to this server's
    adapter at ``server_url``."""
    with db.session() as s:
        specs, routes = alerts_db.specs(s), alerts_db.routes(s)
    adapter_url = server_url.rstrip("/") + "/v1/alerts/adapter"
    out = receivers.render(specs, routes, adapter_url=adapter_url, ca_file=ca_file)
    return out["receivers"], out["route"].get("routes", [])


def render(
    kind: str,
    scrape: config.Scrape,
    db: Database,
    tuning: rules.Tuning | None = None,
    grouping: config.Grouping | None = None,
) -> str:
    if kind == "prometheus":
        return yamltext.dump(config.prometheus(scrape))
    if kind == "rules":
        return yamltext.dump(rules.render(tuning))
    found, routes = receivers_and_routes(db, scrape.server_url, scrape.ca_file)
    return yamltext.dump(config.alertmanager(found, routes, grouping))


@router.get(
    "/monitoring/config/{kind}",
    response_class=YamlResponse,
    # a YAML document whose top level is a mapping (what a YAML-reading client gets)
    responses={200: {"content": {"text/yaml": {"schema": {"type": "object"}}}}},
    summary="Prometheus, rule or Alertmanager configuration for this cloud (YAML)",
)
def get_config(
    kind: Kind,
    request: Request,
    _: Admin,
    server_url: Annotated[str | None, Query(max_length=1024, pattern=r"^https?://[^\s]+$")] = None,
    token_file: FilePath = None,
    ca_file: FilePath = None,
    metrics_ca_file: FilePath = None,
    rules_file: FilePath = None,
    alertmanager: Annotated[str, Query(max_length=255, pattern=r"^[^\s/]+:\d{1,5}$")] = (
        "localhost:9093"
    ),
) -> YamlResponse:
    """Paths are where the user's Prometheus reads them; the server URL defaults to
    the one this request came in on, the thresholds to the managed setup's."""
    setup: Setup | None = getattr(request.app.state, "monitoring", None)
    scrape = config.Scrape(
        server_url=server_url or str(request.base_url),
        token_file=token_file or "/etc/prometheus/dockyard.token",
        rules_file=rules_file or "/etc/prometheus/rules/dockyard.yml",
        alertmanager=alertmanager,
        ca_file=ca_file,
        metrics_ca_file=metrics_ca_file,
    )
    tuning, grouping = (setup.tuning, setup.grouping) if setup else (None, None)
    text = render(kind, scrape, request.app.state.db, tuning, grouping)
    return YamlResponse(text)


def sync_app(state: Any) -> list[str]:
    """:func:`sync` for a running app (``app.state``): nothing without a setup."""
    setup: Setup | None = getattr(state, "monitoring", None)
    return [] if setup is None else sync(setup, state.db)


def sync(setup: Setup, db: Database) -> list[str]:
    """Write the setup's files whose text changed; reload the daemons that read them.
    Returns the kinds written. A daemon not running yet reads its file when it starts."""
    changed = [kind for kind in ("rules", "prometheus", "alertmanager")
               if _write(setup.path(kind), render(kind, setup.scrape, db, setup.tuning,
                                                  setup.grouping))]  # fmt: skip
    targets = {setup.prometheus_url for k in changed if k in ("rules", "prometheus")}
    if "alertmanager" in changed:
        targets.add(setup.alertmanager_url)
    for url in sorted(targets):
        _reload(url)
    return changed


def _write(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # 0600: alertmanager.yml holds receivers' secrets (SMTP passwords, robot tokens)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def _reload(url: str) -> None:
    try:
        httpx.post(f"{url.rstrip('/')}/-/reload", timeout=10).raise_for_status()
    except httpx.HTTPStatusError as exc:
        # the daemon keeps its old configuration: say so, loudly, with its answer
        log.error("reloading %s refused: %s", url, exc.response.text.strip())
    except httpx.TransportError:
        log.info("%s is not running yet; it reads the new file when it starts", url)
