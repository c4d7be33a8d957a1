"""Monitoring: Prometheus's HTTP service discovery, the server's own metrics, the token.

    GET  /v1/monitoring/targets   http_sd JSON: one target per host whose agent serves
                                  /metrics (job dockyard-agent, labels host, az) and this
                                  server (job dockyard-server)       admin or monitoring token
                                  A host's target is the server's word: the address its
                                  agent registered from, the port of the URL it gave, its
                                  host and az from the database
    GET  /v1/monitoring/metrics-ca  the CA of the agents' /metrics (PEM)
                                                                     admin or monitoring token
    GET  /v1/monitoring/metrics   dockyard_host_up, dockyard_host_enabled and
                                  dockyard_host_drift (host check's drifting items)
                                                                     admin or monitoring token
    POST /v1/monitoring/token     a new monitoring token, the old one revoked      admin
    GET  /v1/agent/monitoring     the tokens' SHA-256, for the agents' /metrics    agent
    POST /v1/agent/hosts/{name}/metrics-certificate   a CSR in, the certificate of the
                                  host's /metrics out: for its registered address only,
                                  server authentication only, signed by the metrics CA
                                  (metrics-ca.pem beside --tls-ca, never the cloud's CA,
                                  which clients trust for the API)                  agent

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
from dockyard.errors import BadRequest, Conflict, NotFound
from dockyard.monitor.drift import HOST_HELP, HOST_METRIC, host_drift_samples
from dockyard.monitor.samples import SampleCollector

router = APIRouter(tags=["monitoring"])
METRICS_PATH = "/v1/monitoring/metrics"
AGENT_METRICS_PATH = "/metrics"


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
        found = agent_target(h)
        if found is not None:
            out.append(found)
    return out


def agent_target(h: HostSeen) -> dict[str, Any] | None:
    """Host ``h``'s target, or None (no /metrics, or no address registered yet). The
    agent says only whether it serves http or https and on which port; where it is
    scraped (its registered address) and the host and az labels are the server's, so a
    host cannot have another host's /metrics scraped in its name, or its own in another's."""
    url = urllib.parse.urlsplit(h.metrics_url)
    try:
        port = url.port
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or port is None or not h.address:
        return None
    netloc = f"[{h.address}]:{port}" if ":" in h.address else f"{h.address}:{port}"
    labels = {"job": "dockyard-agent", "host": h.name, "az": h.availability_zone}
    return _target(url.scheme, netloc, AGENT_METRICS_PATH, labels)


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
    """The certificate of a host's /metrics, signed by the metrics CA (never the cloud's),
    for the host's registered address (the one it calls from; before its first
    registration, that one) and server authentication only."""
    hosts.check_agent(who.host_name, name)
    signer = metrics_ca(request.app.state.ca_file)
    if signer is None:
        raise Conflict(
            "this server holds no CA key (ca.key beside its --tls-ca) to make a metrics CA "
            "with; give dockyard-agent --metrics-cert and --metrics-key, or serve /metrics "
            "over http"
        )
    address = request.client.host if request.client else ""
    with db.session(write=False) as s:
        registered = monitoring.registered_address(s, name)
        holder = hosts.address_holder(s, address, name)
    if holder is not None:
        raise Conflict(
            f"{address}, where this request comes from, is host {holder}'s registered "
            f"address: a /metrics certificate is for one host's own address. Give host "
            f"{name} an address of its own, or dockyard-agent --metrics-cert and --metrics-key"
        )
    if registered and registered != address:
        raise Conflict(
            f"host {name} registered from {registered}, not {address}, where this request "
            "comes from: a /metrics certificate is for the registered address only. Restart "
            "its agent from the host's address (it registers again), then ask again"
        )
    try:
        pem = pki.sign_host_cert(signer[0], signer[1], body.csr.encode(), name, address)
    except pki.BadCsr as exc:
        raise BadRequest(str(exc)) from exc
    return model.MetricsCert(certificate=pem.decode(), address=address)


def metrics_ca(ca_file: Path | None) -> tuple[Path, Path] | None:
    """The metrics CA (certificate, key) beside the cloud's CA ``ca_file``, made if absent
    (dockyard-server does it at start, so a cloud from before it has one); None when
    there is no cloud CA key beside ``ca_file`` (a server whose CA is kept elsewhere)."""
    if ca_file is None or not ca_file.with_name("ca.key").exists():
        return None
    return pki.ensure_metrics_ca(ca_file.parent)


@router.get(
    "/monitoring/metrics-ca",
    response_class=Response,
    responses={200: {"content": {"application/x-pem-file": {}}}},
)
def metrics_ca_certificate(request: Request, _: Monitoring) -> Response:
    """The CA that signs the agents' /metrics certificates: what a Prometheus verifies
    them with (tls_config.ca_file of the dockyard-agent job)."""
    signer = metrics_ca(request.app.state.ca_file)
    if signer is None:
        raise NotFound(
            "this server has no metrics CA (no ca.key beside its --tls-ca): agents serve "
            "/metrics with their own --metrics-cert, or over http"
        )
    return Response(signer[0].read_bytes(), media_type="application/x-pem-file")


@router.get("/agent/monitoring", tags=["agent"])
def agent_monitoring(request: Request, db: Db, who: Agent) -> dict[str, list[str]]:
    """The monitoring token's hashes. A host registered before the server kept hosts'
    addresses gets the one it calls from here (its /metrics target needs one)."""
    address = request.client.host if request.client else ""
    with db.session() as s:
        monitoring.note_address(s, who.host_name or "", address)
        return {"scrape_token_sha256": monitoring.token_hashes(s)}
