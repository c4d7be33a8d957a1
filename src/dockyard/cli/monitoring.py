"""``dockyard monitoring config --prometheus|--rules|--alertmanager``: the files the
server renders for a user's own Prometheus and Alertmanager (src/dockyard/monitor/)."""

from __future__ import annotations

import argparse
import sys

from dockyard.cli.client import Api, encode_query

OPTIONS = ("server_url", "token_file", "ca_file", "metrics_ca_file", "rules_file",
           "alertmanager")  # fmt: skip


def config(api: Api, a: argparse.Namespace) -> None:
    query = {k: getattr(a, k) for k in OPTIONS if getattr(a, k) is not None}
    text = api.fetch(f"/monitoring/config/{a.kind}" + ("?" + encode_query(query) if query else ""))
    sys.stdout.write(text.decode())


def add_parsers(sub: argparse._SubParsersAction, fmt: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    verbs = sub.add_parser(
        "monitoring", help="Prometheus and Alertmanager configuration for this cloud"
    ).add_subparsers(dest="verb", required=True)
    p = verbs.add_parser(
        "config",
        help="admins: print prometheus.yml, the rule file or alertmanager.yml",
        description="Print a file for your own Prometheus or Alertmanager; paths are where "
        "that Prometheus reads them.",
    )
    kind = p.add_mutually_exclusive_group(required=True)
    for name, text in (
        ("prometheus", "prometheus.yml: targets through the server's http_sd, rules, alerting"),
        ("rules", "Dockyard's alert rules (a Prometheus rule file)"),
        ("alertmanager", "alertmanager.yml: routes, receivers and the inhibition rules"),
    ):
        kind.add_argument(f"--{name}", dest="kind", action="store_const", const=name, help=text)
    p.add_argument("--server-url", help="the API as Prometheus reaches it (default: DOCKYARD_URL)")
    p.add_argument(
        "--token-file",
        help="the file holding the scrape token (default /etc/prometheus/dockyard.token)",
    )
    p.add_argument("--ca-file", help="the cloud's CA, for an https server")
    p.add_argument(
        "--metrics-ca-file",
        help="the CA of the agents' /metrics certificates (GET /v1/monitoring/metrics-ca; "
        "default: --ca-file)",
    )
    p.add_argument(
        "--rules-file",
        help="where Prometheus reads the rules (default /etc/prometheus/rules/dockyard.yml)",
    )
    p.add_argument(
        "--alertmanager-address",
        dest="alertmanager",
        metavar="HOST:PORT",
        help="HOST:PORT of the Alertmanager (default localhost:9093)",
    )
    p.set_defaults(run=config)
