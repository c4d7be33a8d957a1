"""Monitoring's data: the scrape token, the http_sd targets, the hosts' up and enabled.

The monitoring token is a read-only credential of the cloud (a ``tokens`` row whose
host_name is MONITORING, a name no host can have): Prometheus sends it to
/v1/monitoring/targets, /v1/monitoring/metrics and every agent's /metrics. Only its
SHA-256 is stored; agents get the hashes (GET /v1/agent/monitoring) and compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dockyard.db import hosts
from dockyard.db import models as m
from dockyard.db.identity import MONITORING, hash_token, new_token

METRICS_LABEL = "dockyard.metrics"  # the agent's /metrics URL, which it registers


def ensure_token(s: Session) -> str | None:
    """A monitoring token exists after; returns it when made now (None: one was there)."""
    if s.scalar(select(m.Token.id).where(m.Token.host_name == MONITORING).limit(1)):
        return None
    return rotate_token(s)


def rotate_token(s: Session) -> str:
    """A new monitoring token, the old ones revoked (agents learn it within a heartbeat)."""
    s.execute(delete(m.Token).where(m.Token.host_name == MONITORING))
    token = new_token()
    s.add(m.Token(token_hash=hash_token(token), host_name=MONITORING))
    s.flush()
    return token


def token_hashes(s: Session) -> list[str]:
    return list(s.scalars(select(m.Token.token_hash).where(m.Token.host_name == MONITORING)))


@dataclass(frozen=True)
class HostSeen:
    name: str
    availability_zone: str
    up: bool
    enabled: bool
    metrics_url: str  # "" when its agent serves no /metrics
    address: str  # the address its agent registered from ("" not known yet)


def hosts_seen(s: Session, at: datetime | None = None) -> list[HostSeen]:
    rows = s.scalars(select(m.Host).order_by(m.Host.name))
    return [
        HostSeen(
            r.name,
            r.availability_zone,
            hosts.is_up(r, at),
            r.enabled,
            str((r.labels or {}).get(METRICS_LABEL, "")),
            str((r.labels or {}).get(hosts.ADDRESS_LABEL, "")),
        )
        for r in rows
    ]


def registered_address(s: Session, name: str) -> str | None:
    """The address host ``name``'s agent registered from; None: not registered (yet)."""
    row = s.scalar(select(m.Host).where(m.Host.name == name))
    if row is None:
        return None
    return str((row.labels or {}).get(hosts.ADDRESS_LABEL, ""))


def note_address(s: Session, name: str, address: str) -> None:
    """Record ``address`` as host ``name``'s registered address if it has none (a host
    that registered with a server from before addresses were kept)."""
    row = s.scalar(select(m.Host).where(m.Host.name == name))
    if row is None or (row.labels or {}).get(hosts.ADDRESS_LABEL) or not hosts.is_ip(address):
        return  # the usual case, every heartbeat: nothing to do, no other host read
    if hosts.address_holder(s, address, name) is None:
        row.labels = {**(row.labels or {}), hosts.ADDRESS_LABEL: address}
