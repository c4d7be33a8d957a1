"""Prometheus's and Alertmanager's configuration for a Dockyard cloud (pure).

    prometheus(Scrape)  -> prometheus.yml: one http_sd endpoint finds every target
                           (jobs dockyard-agent and dockyard-server, their address,
                           scheme, path and host/az labels come from the server, the
                           agents' own host/az labels are dropped); the server
                           verified with the cloud's CA, the agents with the metrics
                           CA; Dockyard's rule file; alerts to the Alertmanager
    alertmanager(...)   -> alertmanager.yml: routes and receivers (from the
                           database, item "receivers"; today a default route to a
                           receiver that drops) and the inhibition rules

``SCRAPE_CREDENTIAL`` is the one place that says how Prometheus authenticates to
the server's discovery endpoint and to the targets: the cloud's monitoring token
(read-only: /v1/monitoring and the agents' /metrics), as a bearer token read from a
file (Prometheus re-reads it on every request, so it can be rotated in place).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TARGETS_PATH = "/v1/monitoring/targets"
SCRAPE_CREDENTIAL = "monitoring token file"  # what `credentials_file` below holds
NULL_RECEIVER = "null"


@dataclass(frozen=True)
class Scrape:
    """Where a Prometheus finds and reaches a Dockyard cloud."""

    server_url: str  # the API's base URL as Prometheus reaches it
    token_file: str  # SCRAPE_CREDENTIAL
    rules_file: str  # where this Prometheus reads Dockyard's rule file
    alertmanager: str  # HOST:PORT
    ca_file: str | None = None  # the cloud's CA, for https (the server)
    interval: str = "15s"  # scrape and rule evaluation
    metrics_ca_file: str | None = None  # the metrics CA (the agents); None: ca_file


# The agents' series carry host and az too; with honor_labels false Prometheus renames
# them exported_host/exported_az, which are dropped: a host's series are labelled with
# the host and az the server's database gives its target, whatever its agent says.
AGENT_LABELS_DROPPED = "exported_host|exported_az"


def prometheus(s: Scrape) -> dict[str, Any]:
    """Two jobs on the one http_sd endpoint, each keeping its own targets: the server
    (verified with the cloud's CA) and the agents (with the metrics CA)."""
    auth = {"authorization": {"type": "Bearer", "credentials_file": s.token_file}}
    sd_tls = {"tls_config": {"ca_file": s.ca_file}} if s.ca_file else {}
    agent_ca = s.metrics_ca_file or s.ca_file
    agent_tls = {"tls_config": {"ca_file": agent_ca}} if agent_ca else {}
    # a host that joins is scraped within one interval (http_sd's default refresh is 60 s)
    sd = {
        "url": s.server_url.rstrip("/") + TARGETS_PATH,
        "refresh_interval": s.interval,
        **auth,
        **sd_tls,
    }

    def job(name: str, tls: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        keep = {"source_labels": ["job"], "regex": name, "action": "keep"}
        return {"job_name": name, "honor_labels": False, **auth, **tls,
                "http_sd_configs": [sd], "relabel_configs": [keep], **extra}  # fmt: skip

    return {
        "global": {"scrape_interval": s.interval, "evaluation_interval": s.interval},
        "rule_files": [s.rules_file],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [s.alertmanager]}]}]},
        "scrape_configs": [
            job("dockyard-server", sd_tls),
            job(
                "dockyard-agent",
                agent_tls,
                metric_relabel_configs=[{"regex": AGENT_LABELS_DROPPED, "action": "labeldrop"}],
            ),
        ],
    }


@dataclass(frozen=True)
class Grouping:
    """How Alertmanager batches notifications (tests shorten these)."""

    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"


GROUP_BY = ["alertname", "host", "instance_id"]

# A host that is down (or whose agent is blind) pages once, not once per instance;
# host down also covers that host's agent-down and dockerd-down alerts.
INHIBIT_RULES = [
    {
        "source_matchers": ['outage="host"'],
        "target_matchers": ['scope="instance"'],
        "equal": ["host"],
    },
    {
        "source_matchers": ['alertname="DockyardHostDown"'],
        "target_matchers": ['scope="host"', 'alertname!="DockyardHostDown"'],
        "equal": ["host"],
    },
]


def alertmanager(
    receivers: Sequence[Mapping[str, Any]] = (),
    routes: Sequence[Mapping[str, Any]] = (),
    grouping: Grouping | None = None,
) -> dict[str, Any]:
    """The Alertmanager configuration.

    The seam for receivers and routes kept in Dockyard's database: ``receivers``
    are Alertmanager ``receivers`` entries, ``routes`` child routes of the default
    one (each naming one of them). Without any, alerts go to a receiver that drops
    them (Alertmanager still shows them: `amtool alert query`).
    """
    g = grouping or Grouping()
    route: dict[str, Any] = {
        "receiver": NULL_RECEIVER,
        "group_by": GROUP_BY,
        "group_wait": g.group_wait,
        "group_interval": g.group_interval,
        "repeat_interval": g.repeat_interval,
    }
    if routes:
        route["routes"] = [dict(r) for r in routes]
    return {
        "route": route,
        "receivers": [
            {"name": NULL_RECEIVER},
            *(dict(r) for r in receivers if r["name"] != NULL_RECEIVER),
        ],
        "inhibit_rules": INHIBIT_RULES,
    }
