"""Alerts delivered by a real Alertmanager loaded with render()'s configuration: to a
webhook, to an SMTP server (aiosmtpd), and through the server's adapter to DingTalk,
WeCom, Feishu and SMS endpoints (local test ones); silences and acks hold."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.db import alerts
from dockyard.db.session import Database
from dockyard.monitor.receivers import render
from tests.api.alerting import (
    Alertmanager,
    Mailbox,
    Target,
    alertmanager,
    alertmanager_config,
    free_port,
    http_target,
    smtp_server,
    wait_for,
)
from tests.api.servers import serving_app

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    api: httpx.Client
    url: str
    admin: str
    db: Database
    am: Alertmanager
    target: Target
    mail: Mailbox


def _receivers(t: str, smtp_port: int) -> list[dict[str, Any]]:
    return [
        {"name": "hook", "kind": "webhook", "url": f"{t}/hook"},
        {"name": "mail", "kind": "email", "email_to": "oncall@example.com",
         "smtp_smarthost": f"127.0.0.1:{smtp_port}", "smtp_require_tls": False},
        {"name": "ding", "kind": "dingtalk", "url": f"{t}/ding/send?access_token=SECRET1"},
        {"name": "wx", "kind": "wecom", "url": f"{t}/wecom/send?key=SECRET2"},
        {"name": "fs", "kind": "feishu", "url": f"{t}/feishu/hook/SECRET3"},
        {"name": "sms", "kind": "sms",
         "sms_template": f"{t}/sms?to=13800000000&text={{text}}&level={{severity}}"},
    ]  # fmt: skip


def _setup(api: httpx.Client, target: Target, mail: Mailbox) -> None:
    for body in _receivers(target.url, mail.port):
        api.post("/alerts/receivers", json=body).raise_for_status()
    # project "quiet" goes to the webhook only; every other critical alert goes everywhere
    routes = [{"receiver": "hook", "project": "quiet", "position": 0}]
    routes += [
        {"receiver": r, "severity": "critical", "continue_matching": True}
        for r in ("hook", "mail", "ding", "wx", "fs", "sms")
    ]
    for body in routes:
        api.post("/alerts/routes", json=body).raise_for_status()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    tmp: Path = tmp_path_factory.mktemp("alerts")
    db = Database(f"sqlite:///{tmp}/dockyard.db")
    admin = init(db)
    assert admin is not None
    am_port = free_port()
    app = create_app(db, tmp, alertmanager_url=f"http://127.0.0.1:{am_port}")
    with http_target() as target, smtp_server() as mail, serving_app(app) as url:
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"}) as api:
            _setup(api, target, mail)
            with db.session(write=False) as s:
                rendered = render(alerts.specs(s), alerts.routes(s), adapter_url=f"{url}/alerts/adapter")
            with alertmanager(tmp, am_port, alertmanager_config(rendered)) as am:
                yield Stack(api, url, admin, db, am, target, mail)
    db.engine.dispose()


def alert(name: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": "critical", **labels},
        "annotations": {"summary": f"{name} on {labels.get('host', '?')}"},
    }


def _named(hits: list[Any], name: str) -> list[Any]:
    return [h for h in hits if name.encode() in h.body or name in h.path]


def test_an_alert_reaches_every_receiver_in_its_format(stack: Stack):
    stack.am.post(alert("HostDown", host="h1", project="shop"))
    t = stack.target
    wait_for(lambda: all(_named(t.at(p), "HostDown") for p in ("/hook", "/ding", "/wecom",
             "/feishu", "/sms")), 30, "every HTTP receiver")  # fmt: skip
    mails = wait_for(lambda: [m for m in stack.mail.messages if "HostDown" in m["Subject"]], 30)
    assert mails[0]["To"] == "oncall@example.com"

    hook = _named(t.at("/hook"), "HostDown")[0].json()  # Alertmanager's own JSON, as is
    assert hook["alerts"][0]["labels"]["host"] == "h1" and hook["status"] == "firing"
    ding = _named(t.at("/ding"), "HostDown")[0]
    assert "access_token=SECRET1" in ding.path
    assert ding.json()["msgtype"] == "markdown"
    assert ding.json()["markdown"]["title"] == "[FIRING:1] HostDown"
    assert "HostDown on h1 [severity=critical, project=shop, host=h1]" in ding.json()["markdown"]["text"]
    wx = _named(t.at("/wecom"), "HostDown")[0].json()
    assert wx["msgtype"] == "markdown" and "HostDown on h1" in wx["markdown"]["content"]
    fs = _named(t.at("/feishu"), "HostDown")[0].json()
    assert fs["msg_type"] == "post"
    assert fs["content"]["post"]["zh_cn"]["title"] == "[FIRING:1] HostDown"
    sms = _named(t.at("/sms"), "HostDown")[0]
    query = parse_qs(urlsplit(sms.path).query)
    assert sms.method == "GET" and query["to"] == ["13800000000"]
    assert query["text"][0].startswith("[FIRING:1] HostDown; HostDown on h1")
    assert query["level"] == ["critical"]


def test_routes_by_project(stack: Stack):
    stack.am.post(alert("QuietThing", host="h2", project="quiet"))
    wait_for(lambda: _named(stack.target.at("/hook"), "QuietThing"), 30, "the webhook")
    time.sleep(3)  # group_wait 1 s: other receivers would have had it by now
    assert not _named(stack.target.at("/ding"), "QuietThing")
    assert not _named(stack.target.at("/sms"), "QuietThing")


def test_a_silence_holds(stack: Stack):
    r = stack.api.post(
        "/alerts/silences",
        json={"matchers": [{"name": "alertname", "value": "Muted"}], "comment": "maintenance"},
    )
    assert r.status_code == 201, r.text
    stack.am.post(alert("Muted", host="h3"), alert("Control", host="h3"))
    wait_for(lambda: _named(stack.target.at("/hook"), "Control"), 30, "the control alert")
    time.sleep(3)
    assert not _named(stack.target.hits, "Muted")
    assert not [m for m in stack.mail.messages if "Muted" in m["Subject"]]
    states = {a["labels"]["alertname"]: a["status"]["state"] for a in stack.api.get("/alerts").json()}
    assert states["Muted"] == "suppressed" and states["Control"] == "active"
    listed = stack.api.get("/alerts/silences").json()
    mine = [s for s in listed if s["id"] == r.json()["id"]][0]
    assert mine["createdBy"] == "admin" and mine["comment"] == "maintenance"


def test_ack_is_a_silence_of_the_alert_by_the_caller(stack: Stack):
    stack.am.post(alert("AckMe", host="h4"))
    found = wait_for(lambda: [a for a in stack.api.get("/alerts").json()
                              if a["labels"]["alertname"] == "AckMe"], 10)  # fmt: skip
    r = stack.api.post(f"/alerts/{found[0]['fingerprint']}/ack", json={"comment": "on it"})
    assert r.status_code == 201, r.text
    silence = [s for s in stack.api.get("/alerts/silences").json() if s["id"] == r.json()["id"]]
    assert silence[0]["comment"] == "ack: on it" and silence[0]["createdBy"] == "admin"
    assert {"name": "host", "value": "h4", "isRegex": False, "isEqual": True} in silence[0]["matchers"]
    wait_for(lambda: [a for a in stack.api.get("/alerts").json() if a["labels"]["alertname"]
             == "AckMe" and a["status"]["state"] == "suppressed"], 10, "the ack")  # fmt: skip
    assert stack.api.delete(f"/alerts/silences/{r.json()['id']}").status_code == 204
    missing = stack.api.post("/alerts/0123456789abcdef/ack")
    assert missing.status_code == 404 and "dockyard alert list" in missing.json()["detail"]


def test_receiver_test_sends_a_test_message(stack: Stack):
    for name in ("ding", "fs", "sms", "hook", "mail"):
        r = stack.api.post(f"/alerts/receivers/{name}/test")
        assert r.status_code == 200, r.text
    ding = _named(stack.target.at("/ding"), "DockyardTest")
    assert ding and "a test message to receiver ding, sent by admin" in ding[0].json()["markdown"]["text"]
    assert _named(stack.target.at("/feishu"), "DockyardTest")
    assert _named(stack.target.at("/sms"), "DockyardTest")
    assert _named(stack.target.at("/hook"), "DockyardTest")[0].json()["receiver"] == "hook"
    assert [m for m in stack.mail.messages if "DockyardTest" in m["Subject"]]


def test_adapter_retries_then_answers_502_and_checks_its_token(stack: Stack):
    body = {"name": "broken", "kind": "dingtalk", "url": f"{stack.target.url}/fail/robot"}
    stack.api.post("/alerts/receivers", json=body).raise_for_status()
    with stack.db.session(write=False) as s:
        token = alerts.spec(s, "broken").adapter_token
    payload = {"status": "firing", "alerts": [alert("Broken")]}
    wrong = httpx.post(f"{stack.url}/alerts/adapter/broken", json=payload,
                       headers={"authorization": "Bearer nope"})  # fmt: skip
    assert wrong.status_code == 401
    assert not stack.target.at("/fail")
    r = httpx.post(f"{stack.url}/alerts/adapter/broken", json=payload, timeout=30,
                   headers={"authorization": f"Bearer {token}"})  # fmt: skip
    assert r.status_code == 502, r.text
    assert "HTTP 500 (after 3 tries)" in r.json()["detail"]
    assert len(stack.target.at("/fail")) == 3
    test = stack.api.post("/alerts/receivers/broken/test")
    assert test.status_code == 502


def test_secrets_are_never_echoed(stack: Stack):
    listed = stack.api.get("/alerts/receivers")
    assert listed.status_code == 200
    text = listed.text
    for secret in ("SECRET1", "SECRET2", "SECRET3", "13800000000", "access_token"):
        assert secret not in text
    with stack.db.session(write=False) as s:
        assert alerts.spec(s, "ding").adapter_token not in text
    by_name = {r["name"]: r for r in listed.json()}
    assert by_name["ding"]["target"] == stack.target.url and by_name["ding"]["via_adapter"]
    assert by_name["mail"]["target"] == "oncall@example.com"


def test_a_receiver_in_use_is_not_deleted_and_unknown_ones_are_named(stack: Stack):
    r = stack.api.delete("/alerts/receivers/ding")
    assert r.status_code == 409 and "dockyard alert route delete" in r.json()["detail"]
    bad = stack.api.post("/alerts/routes", json={"receiver": "nobody"})
    assert bad.status_code == 404 and "dockyard alert receiver list" in bad.json()["detail"]
