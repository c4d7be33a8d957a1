"""Alertmanager's ``receivers:`` and ``route:`` from Dockyard's receivers and routes (pure).

Kinds Alertmanager delivers itself become its native configs (webhook_configs,
email_configs, slack_configs). Kinds it lacks (DingTalk, WeCom and Feishu robots,
SMS gateways) become a webhook_config that posts to this server's adapter,
``POST {adapter_url}/{receiver}`` with the receiver's token as a bearer
credential; api/alerts.py converts and delivers (monitor/adapter.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dockyard.model.alerts import ADAPTED, ReceiverKind, ReceiverSpec, Route

NULL = "null"  # the root route's receiver: an alert no route matches goes nowhere
DEFAULT_ADAPTER_URL = "http://127.0.0.1:8787/v1/alerts/adapter"
DEFAULT_FROM = "dockyard-alerts@localhost"


def render(
    receivers: Sequence[ReceiverSpec],
    routes: Sequence[Route],
    *,
    adapter_url: str = DEFAULT_ADAPTER_URL,
    ca_file: str | None = None,
) -> dict[str, Any]:
    """``{"receivers": [...], "route": {...}}`` for Alertmanager's configuration.

    The receivers include ``null`` (no configs), the route's default; ``route``
    holds one child per Dockyard route in order (position, then age as given).
    ``ca_file`` is the CA that signed the server's certificate when
    ``adapter_url`` is https.
    """
    out = [{"name": NULL}]
    out += [_receiver(r, adapter_url.rstrip("/"), ca_file) for r in receivers]
    return {"receivers": out, "route": {"receiver": NULL, "routes": [_route(r) for r in routes]}}


def _receiver(r: ReceiverSpec, adapter_url: str, ca_file: str | None) -> dict[str, Any]:
    if r.kind in ADAPTED:
        http: dict[str, Any] = {"authorization": {"type": "Bearer", "credentials": r.adapter_token}}
        if ca_file:
            http["tls_config"] = {"ca_file": ca_file}
        hook = {"url": f"{adapter_url}/{r.name}", "send_resolved": True, "http_config": http}
        return {"name": r.name, "webhook_configs": [hook]}
    if r.kind == ReceiverKind.webhook:
        return {"name": r.name, "webhook_configs": [{"url": r.url, "send_resolved": True}]}
    if r.kind == ReceiverKind.slack:
        return {"name": r.name, "slack_configs": [{"api_url": r.url, "send_resolved": True}]}
    return {"name": r.name, "email_configs": [_email(r)]}


def _email(r: ReceiverSpec) -> dict[str, Any]:
    mail: dict[str, Any] = {
        "to": r.email_to,
        "from": r.smtp_from or DEFAULT_FROM,
        "smarthost": r.smtp_smarthost,
        "require_tls": r.smtp_require_tls,
        "send_resolved": True,
    }
    if r.smtp_auth_user:
        mail["auth_username"] = r.smtp_auth_user
        mail["auth_password"] = r.smtp_auth_password
    return mail


def _route(r: Route) -> dict[str, Any]:
    matchers = [f'{k}="{v}"' for k, v in (("severity", r.severity), ("project", r.project)) if v]
    out: dict[str, Any] = {"receiver": r.receiver, "continue": r.continue_matching}
    if matchers:
        out["matchers"] = matchers
    return out
