"""Monitoring: Prometheus's HTTP service discovery, the server's own metrics, the token.

    GET  /v1/monitoring/targets   http_sd JSON: one target per host whose agent serves
                                  /metrics (job dockyard-agent, labels host, az) and this
                                  server (job dockyard-server)       admin or monitoring token
    GET  /v1/monitoring/metrics   dockyard_host_up, dockyard_host_enabled and
                                  dockyard_host_drift (host check's drifting items)
                                                                     admin or monitoring token
    POST /v1/monitoring/token     a new monitoring token, the old one revoked      admin
    GET  /v1/agent/monitoring     the tokens' SHA-256, for the agents' /metrics    agent
    POST /v1/agent/hosts/{name}/metrics-certificate   a CSR in, the certificate of the
                                  host's /metrics out (its name and the address it called
                                  from), signed with the CA key beside --tls-ca    agent

A Prometheus needs one ``http_sd_configs`` entry and the token (monitor/README.md).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from dockyard import model, pki
from dockyard.api.deps import Admin, Agent, Db, Key, Monitoring
from dockyard.db import drift, hosts, monitoring
from dockyard.db.monitoring import HostSeen
from dockyard.errors import BadRequest, Conflict
from dockyard.monitor.drift import HOST_HELP, HOST_METRIC, host_drift_samples
from dockyard.monitor.samples import SampleCollector

router = APIRouter(tags=["monitoring"])
METRICS_PATH = "/v1/monitoring/metrics"


@router.get("/monitoring/targets")
def targets(request: Request, db: Db, _: Monitoring) -> list[dict[str, Any]]:
    """Prometheus HTTP service discovery: every host's /metrics, and this server's."""
    with db.session(write=False) as s:
        seen = monitoring.hosts_seen(s)
    out = [
        _target(
            request.base_url.scheme,
            request.base_url.netloc,
            METRICS_PATH,
            {"job": "dockyard-server"},
        )
    ]
    for h in seen:
        url = urllib.parse.urlsplit(h.metrics_url)
        if url.scheme in ("http", "https") and url.netloc:
            labels = {"job": "dockyard-agent", "host": h.name, "az": h.availability_zone}
            out.append(_target(url.scheme, url.netloc, url.path or "/metrics", labels))
    return out


def _target(scheme: str, netloc: str, path: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "targets": [netloc],
        "labels": {**labels, "__scheme__": scheme, "__metrics_path__": path},
    }


@router.get("/monitoring/metrics", response_class=PlainTextResponse)
def metrics(db: Db, _: Monitoring) -> Response:
    """What the server knows of each host: up (heartbeats), enabled, and its drift from
    the cluster's baseline (a series per drifting item, as `dockyard host check`)."""
    with db.session(write=False) as s:
        seen = monitoring.hosts_seen(s)
        drifting = host_drift_samples(drift.check(s))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Hosts(seen))
    registry.register(SampleCollector(lambda: drifting, {HOST_METRIC: HOST_HELP}))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Hosts(Collector):
    def __init__(self, seen: list[HostSeen]) -> None:
        self.seen = seen

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "dockyard_host_up", "1 unless the server calls the host down", labels=["host", "az"]
        )
        enabled = GaugeMetricFamily(
            "dockyard_host_enabled", "0 when disabled", labels=["host", "az"]
        )
        for h in self.seen:
            up.add_metric([h.name, h.availability_zone], float(h.up))
            enabled.add_metric([h.name, h.availability_zone], float(h.enabled))
        yield up
        yield enabled


@router.post("/monitoring/token")
def rotate_token(request: Request, db: Db, _: Admin) -> dict[str, str]:
    """A new monitoring token; the agents take it within a heartbeat (10 s), and this
    server's token files (STATE_DIR/monitoring.token, a managed Prometheus's
    credentials file, which it re-reads on every request) hold it at once."""
    with db.session() as s:
        token = monitoring.rotate_token(s)
    keep_token(request.app.state.monitoring_token_files, token)
    return {"token": token}


def keep_token(files: list[Path], token: str) -> None:
    """Write ``token`` into each file, 0600, replacing it whole (a reader never sees
    half of it)."""
    for path in files:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        tmp.replace(path)


@router.post("/agent/hosts/{name}/metrics-certificate", tags=["agent"])
def metrics_certificate(
    name: Key, body: model.MetricsCsr, request: Request, db: Db, who: Agent
) -> model.MetricsCert:
    """The certificate of a host's /metrics, signed by the cloud's CA, for the host's name
    and the address it called from (never names the request asks for)."""
    hosts.check_agent(who.host_name, name)
    ca: Path | None = request.app.state.ca_file
    key = ca.with_name("ca.key") if ca is not None else None
    if ca is None or key is None or not key.exists():
        raise Conflict(
            "this server holds no CA key (ca.key beside its --tls-ca) to sign with; give "
            "dockyard-agent --metrics-cert and --metrics-key, or serve /metrics over http"
        )
    address = request.client.host if request.client else ""
    try:
        pem = pki.sign_host_cert(ca, key, body.csr.encode(), [name, address])
    except pki.BadCsr as exc:
        raise BadRequest(str(exc)) from exc
    return model.MetricsCert(certificate=pem.decode(), address=address)


@router.get("/agent/monitoring", tags=["agent"])
def agent_monitoring(db: Db, _: Agent) -> dict[str, list[str]]:
    with db.session(write=False) as s:
        return {"scrape_token_sha256": monitoring.token_hashes(s)}
