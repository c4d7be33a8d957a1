"""Alertmanager's webhook JSON converted into what IM robots and SMS gateways take (pure).

    Alertmanager ──webhook JSON──► POST /v1/alerts/adapter/{receiver} (api/alerts.py)
        └─ outgoing(spec, payload) ─► Outgoing(method, url, body)
              dingtalk  {"msgtype": "markdown", "markdown": {"title", "text"}}
              wecom     {"msgtype": "markdown", "markdown": {"content"}}   (group robot)
              feishu    {"msg_type": "post", "content": {"post": {"zh_cn": ...}}}
              slack     {"text"}                                 (test messages only)
              webhook   the payload as is                        (test messages only)
              sms       GET of the URL template, fields URL-encoded
        └─ api/delivery.py sends it, with retries

The payload comes from Alertmanager (authenticated by the receiver's token) but is
read defensively: missing fields read as empty, every text is cut to a bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from dockyard.model.alerts import ReceiverKind, ReceiverSpec

MAX_ALERTS_SHOWN = 20  # a message lists at most this many alerts, then "and N more"
MAX_SMS = 300  # characters of {text}: one or two SMS
MAX_WECOM = 4000  # WeCom's markdown content is limited to 4096 bytes


@dataclass(frozen=True)
class Outgoing:
    method: str  # POST (JSON body) or GET (SMS template)
    url: str
    body: dict[str, Any] | None


def outgoing(spec: ReceiverSpec, payload: dict[str, Any]) -> Outgoing:
    """What to send to ``spec``'s target for one Alertmanager notification."""
    url = spec.url or ""
    if spec.kind == ReceiverKind.dingtalk:
        title, text = headline(payload), markdown(payload)
        return Outgoing(
            "POST", url, {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
        )
    if spec.kind == ReceiverKind.wecom:
        return Outgoing(
            "POST",
            url,
            {"msgtype": "markdown", "markdown": {"content": markdown(payload)[:MAX_WECOM]}},
        )
    if spec.kind == ReceiverKind.feishu:
        return Outgoing("POST", url, feishu(payload))
    if spec.kind == ReceiverKind.slack:
        return Outgoing("POST", url, {"text": plain(payload)})
    if spec.kind == ReceiverKind.sms:
        return Outgoing("GET", sms_url(spec.sms_template or "", payload), None)
    if spec.kind == ReceiverKind.webhook:
        return Outgoing("POST", url, payload)
    raise ValueError(f"{spec.kind} receivers are not sent through the adapter")


def headline(payload: dict[str, Any]) -> str:
    """``[FIRING:2] HostDown`` (Alertmanager's own subject line)."""
    status = _text(payload.get("status"), 16) or "firing"
    alerts = _alerts(payload)
    firing = sum(1 for a in alerts if a.get("status") != "resolved")
    count = f":{firing}" if status == "firing" else ""
    name = _text(_labels(payload, "commonLabels").get("alertname"), 100)
    if not name:
        names = sorted({_text(_dict(a.get("labels")).get("alertname"), 100) for a in alerts})
        name = ", ".join(n for n in names if n)[:200]
    return f"[{status.upper()}{count}] {name or 'alert'}"


def lines(payload: dict[str, Any]) -> list[str]:
    """One line per alert: what it says, where, how bad."""
    alerts = _alerts(payload)
    out = [_line(a) for a in alerts[:MAX_ALERTS_SHOWN]]
    if len(alerts) > MAX_ALERTS_SHOWN:
        out.append(f"... and {len(alerts) - MAX_ALERTS_SHOWN} more")
    return out


def _line(alert: dict[str, Any]) -> str:
    labels, notes = _dict(alert.get("labels")), _dict(alert.get("annotations"))
    what = _text(notes.get("summary"), 300) or _text(labels.get("alertname"), 100) or "alert"
    where = ", ".join(
        f"{k}={_text(labels[k], 100)}"
        for k in ("severity", "project", "host", "name")
        if k in labels
    )
    resolved = " (resolved)" if alert.get("status") == "resolved" else ""
    return f"{what}{resolved}" + (f" [{where}]" if where else "")


def markdown(payload: dict[str, Any]) -> str:
    body = "\n".join(f"- {line}" for line in lines(payload))
    return f"### {headline(payload)}\n\n{body}"


def plain(payload: dict[str, Any]) -> str:
    return "\n".join([headline(payload), *lines(payload)])


def feishu(payload: dict[str, Any]) -> dict[str, Any]:
    rows = [[{"tag": "text", "text": line}] for line in lines(payload)]
    post = {"zh_cn": {"title": headline(payload), "content": rows}}
    return {"msg_type": "post", "content": {"post": post}}


def sms_url(template: str, payload: dict[str, Any]) -> str:
    """The template with its fields filled, each URL-encoded (so a message cannot add
    query parameters or change the host)."""
    alerts = _alerts(payload)
    first = _dict(alerts[0].get("labels")) if alerts else {}
    notes = _dict(alerts[0].get("annotations")) if alerts else {}
    text = "; ".join([headline(payload), *lines(payload)])
    fields = {
        "text": text[:MAX_SMS],
        "status": _text(payload.get("status"), 16),
        "alertname": _text(first.get("alertname"), 100),
        "severity": _text(first.get("severity"), 32),
        "summary": _text(notes.get("summary"), MAX_SMS),
        "count": str(len(alerts)),
    }
    return template.format_map({k: quote(v, safe="") for k, v in fields.items()})


def sample_payload(receiver: str, who: str) -> dict[str, Any]:
    """A notification in Alertmanager's webhook format, for ``dockyard alert receiver test``."""
    now = datetime.now(UTC).isoformat()
    labels = {"alertname": "DockyardTest", "severity": "info"}
    summary = f"a test message to receiver {receiver}, sent by {who}"
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": summary},
        "startsAt": now,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": "0000000000000000",
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DockyardTest"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": receiver,
        "groupLabels": {"alertname": "DockyardTest"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": summary},
        "externalURL": "",
        "alerts": [alert],
    }


def _alerts(payload: dict[str, Any]) -> list[dict[str, Any]]:
    alerts = payload.get("alerts")
    return [a for a in alerts if isinstance(a, dict)] if isinstance(alerts, list) else []


def _labels(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return _dict(payload.get(key))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any, limit: int) -> str:
    return " ".join(str(value).split())[:limit] if value is not None else ""
