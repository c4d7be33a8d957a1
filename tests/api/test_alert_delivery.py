"""Alerts delivered by a real Alertmanager loaded with render()'s configuration: to a
webhook, to an SMTP server (aiosmtpd), and through the server's adapter to DingTalk,
WeCom, Feishu and SMS endpoints (local test ones); silences and acks hold."""

from __future__ import annotations

import json
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
        {
            "name": "mail",
            "kind": "email",
            "email_to": "oncall@example.com",
            "smtp_smarthost": f"127.0.0.1:{smtp_port}",
            "smtp_require_tls": False,
        },
        {"name": "ding", "kind": "dingtalk", "url": f"{t}/ding/send?access_token=SECRET1"},
        {"name": "wx", "kind": "wecom", "url": f"{t}/wecom/send?key=SECRET2"},
        {"name": "fs", "kind": "feishu", "url": f"{t}/feishu/hook/SECRET3"},
        {
            "name": "sms",
            "kind": "sms",
            "sms_template": f"{t}/sms?to=13800000000&text={{text}}&level={{severity}}",
        },
    ]


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
    live: dict[str, Any] = {}

    def config() -> dict[str, Any]:
        with db.session(write=False) as s:
            adapter_url = f"{live['url']}/alerts/adapter"
            return alertmanager_config(
                render(alerts.specs(s), alerts.routes(s), adapter_url=adapter_url)
            )

    def changed() -> None:  # what `dockyard up --monitoring` does: re-render, reload
        if "am" in live:
            live["am"].reload(config())

    app = create_app(
        db, tmp, alertmanager_url=f"http://127.0.0.1:{am_port}", alerts_changed=changed
    )
    with http_target() as target, smtp_server() as mail, serving_app(app) as url:
        live["url"] = url
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {admin}"}) as api:
            _setup(api, target, mail)
            with alertmanager(tmp, am_port, config()) as am:
                live["am"] = am
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
    wait_for(
        lambda: all(
            _named(t.at(p), "HostDown") for p in ("/hook", "/ding", "/wecom", "/feishu", "/sms")
        ),
        30,
        "every HTTP receiver",
    )
    mails = wait_for(lambda: [m for m in stack.mail.messages if "HostDown" in m["Subject"]], 30)
    assert mails[0]["To"] == "oncall@example.com"

    hook = _named(t.at("/hook"), "HostDown")[0].json()  # Alertmanager's own JSON, as is
    assert hook["alerts"][0]["labels"]["host"] == "h1" and hook["status"] == "firing"
    ding = _named(t.at("/ding"), "HostDown")[0]
    assert "access_token=SECRET1" in ding.path
    assert ding.json()["msgtype"] == "markdown"
    assert ding.json()["markdown"]["title"] == "[FIRING:1] HostDown"
    assert (
        "HostDown on h1 [severity=critical, project=shop, host=h1]"
        in ding.json()["markdown"]["text"]
    )
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


def test_a_receiver_added_later_is_live_once_the_server_reloads(stack: Stack):
    body = {"name": "late", "kind": "webhook", "url": f"{stack.target.url}/late"}
    stack.api.post("/alerts/receivers", json=body).raise_for_status()
    route = {"receiver": "late", "project": "newteam", "position": 0}
    stack.api.post("/alerts/routes", json=route).raise_for_status()
    stack.am.post(alert("LateThing", host="h6", project="newteam"))
    hit = wait_for(lambda: _named(stack.target.at("/late"), "LateThing"), 30, "the new receiver")
    assert hit[0].json()["receiver"] == "late"
    time.sleep(2)
    assert not _named(stack.target.at("/ding"), "LateThing")  # the first matching route won


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
    states = {
        a["labels"]["alertname"]: a["status"]["state"] for a in stack.api.get("/alerts").json()
    }
    assert states["Muted"] == "suppressed" and states["Control"] == "active"
    listed = stack.api.get("/alerts/silences").json()
    mine = [s for s in listed if s["id"] == r.json()["id"]][0]
    assert mine["createdBy"] == "admin" and mine["comment"] == "maintenance"


def test_ack_is_a_silence_of_the_alert_by_the_caller(stack: Stack):
    stack.am.post(alert("AckMe", host="h4"))
    found = wait_for(
        lambda: [a for a in stack.api.get("/alerts").json() if a["labels"]["alertname"] == "AckMe"],
        10,
    )
    r = stack.api.post(f"/alerts/{found[0]['fingerprint']}/ack", json={"comment": "on it"})
    assert r.status_code == 201, r.text
    silence = [s for s in stack.api.get("/alerts/silences").json() if s["id"] == r.json()["id"]]
    assert silence[0]["comment"] == "ack: on it" and silence[0]["createdBy"] == "admin"
    assert {"name": "host", "value": "h4", "isRegex": False, "isEqual": True} in silence[0][
        "matchers"
    ]
    wait_for(
        lambda: [
            a
            for a in stack.api.get("/alerts").json()
            if a["labels"]["alertname"] == "AckMe" and a["status"]["state"] == "suppressed"
        ],
        10,
        "the ack",
    )
    assert stack.api.delete(f"/alerts/silences/{r.json()['id']}").status_code == 204
    missing = stack.api.post("/alerts/0123456789abcdef/ack")
    assert missing.status_code == 404 and "dockyard alert list" in missing.json()["detail"]


def test_receiver_test_sends_a_test_message(stack: Stack):
    for name in ("ding", "fs", "sms", "hook", "mail"):
        r = stack.api.post(f"/alerts/receivers/{name}/test")
        assert r.status_code == 200, r.text
    ding = _named(stack.target.at("/ding"), "DockyardTest")
    assert (
        ding
        and "a test message to receiver ding, sent by admin" in ding[0].json()["markdown"]["text"]
    )
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
    wrong = httpx.post(
        f"{stack.url}/alerts/adapter/broken", json=payload, headers={"authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    assert not stack.target.at("/fail")
    r = httpx.post(
        f"{stack.url}/alerts/adapter/broken",
        json=payload,
        timeout=30,
        headers={"authorization": f"Bearer {token}"},
    )
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


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    from dockyard.cli.main import main

    main(list(argv))
    return capsys.readouterr().out


def test_the_cli_manages_receivers_routes_silences_and_acks(stack, monkeypatch, capsys, tmp_path):
    from dockyard.cli.main import main

    monkeypatch.setenv("DOCKYARD_URL", stack.url.removesuffix("/v1"))
    monkeypatch.setenv("DOCKYARD_TOKEN", stack.admin)
    (tmp_path / "pw").write_text("PWSECRET\n")
    t = stack.target.url
    _cli(
        capsys,
        "alert",
        "receiver",
        "add",
        "cli-ding",
        "--im",
        "dingtalk",
        f"{t}/ding?access_token=CLISECRET",
    )
    _cli(
        capsys,
        "alert",
        "receiver",
        "add",
        "cli-mail",
        "--email",
        "ops@example.com",
        "--smtp",
        "127.0.0.1:25",
        "--smtp-auth-user",
        "am",
        "--smtp-auth-password-file",
        str(tmp_path / "pw"),
    )
    listed = _cli(capsys, "alert", "receiver", "list")
    assert "cli-ding  dingtalk" in listed and "ops@example.com" in listed
    assert "CLISECRET" not in listed and "PWSECRET" not in listed
    assert "PWSECRET" not in _cli(capsys, "alert", "receiver", "list", "-f", "json")
    with stack.db.session(write=False) as s:  # the password went in, read from its file
        assert alerts.spec(s, "cli-mail").smtp_auth_password == "PWSECRET"

    route = json.loads(
        _cli(
            capsys,
            "alert",
            "route",
            "add",
            "--receiver",
            "cli-ding",
            "--severity",
            "warning",
            "--continue",
            "-f",
            "json",
        )
    )
    assert route["continue_matching"] and route["severity"] == "warning"
    assert route["id"] in _cli(capsys, "alert", "route", "list")
    assert "test message sent to cli-ding" in _cli(capsys, "alert", "receiver", "test", "cli-ding")
    _cli(capsys, "alert", "route", "delete", route["id"])
    _cli(capsys, "alert", "receiver", "delete", "cli-ding")

    stack.am.post(alert("CliAlert", host="h9"))
    wait_for(lambda: "CliAlert" in _cli(capsys, "alert", "list"), 10, "the alert in the list")
    rows = json.loads(_cli(capsys, "alert", "list", "-f", "json"))
    fingerprint = next(a["fingerprint"] for a in rows if a["labels"]["alertname"] == "CliAlert")
    sid = _cli(
        capsys,
        "alert",
        "silence",
        "create",
        "--match",
        "host=h9",
        "--match",
        "alertname=~Cli.*",
        "--duration",
        "1h",
        "--comment",
        "deploying",
    ).strip()
    silences = _cli(capsys, "alert", "silence", "list")
    assert sid in silences and "host=h9,alertname=~Cli.*" in silences
    assert f"{sid} expired" in _cli(capsys, "alert", "silence", "expire", sid)
    out = _cli(capsys, "alert", "ack", fingerprint, "--comment", "looking")
    assert f"alert {fingerprint} acknowledged" in out

    with pytest.raises(SystemExit) as refused:
        main(["alert", "receiver", "add", "bad", "--webhook", "ftp://x.example/"])
    assert refused.value.code == 1
    assert "only http:// and https:// URLs" in capsys.readouterr().err


def test_alert_commands_start_fast():
    from tests.unit.test_cli_main import HEAVY, loaded_after

    for argv in (("alert", "list"), ("alert", "receiver", "list"), ("alert", "silence", "list")):
        loaded = loaded_after(*argv)
        assert not {m for m in loaded if m.startswith(HEAVY)}, argv
        assert "dockyard.cli.alerts" in loaded


def test_members_see_and_silence_their_own_project_only(stack: Stack):
    stack.api.post("/projects", json={"name": "teamb"}).raise_for_status()
    made = stack.api.post("/users", json={"name": "bob", "project": "teamb", "role": "member"})
    bob = {"authorization": f"Bearer {made.json()['token']}"}
    stack.am.post(
        alert("TeamB", host="h5", project="teamb"), alert("TeamC", host="h5", project="teamc")
    )
    mine = wait_for(
        lambda: [
            a
            for a in httpx.get(f"{stack.url}/alerts", headers=bob).json()
            if a["labels"]["alertname"] == "TeamB"
        ],
        10,
    )
    seen = {
        a["labels"].get("project") for a in httpx.get(f"{stack.url}/alerts", headers=bob).json()
    }
    assert seen == {"teamb"}
    refused = httpx.post(
        f"{stack.url}/alerts/receivers",
        headers=bob,
        json={"name": "x", "kind": "webhook", "url": "http://x.example/"},
    )
    assert refused.status_code == 403
    other = httpx.post(
        f"{stack.url}/alerts/silences",
        headers=bob,
        json={"comment": "no", "matchers": [{"name": "project", "value": "teamc"}]},
    )
    assert other.status_code == 403 and "teamb" in other.json()["detail"]
    r = httpx.post(
        f"{stack.url}/alerts/silences",
        headers=bob,
        json={"comment": "ours", "matchers": [{"name": "host", "value": "h5"}]},
    )
    assert r.status_code == 201, r.text
    silence = [s for s in stack.api.get("/alerts/silences").json() if s["id"] == r.json()["id"]][0]
    assert {"name": "project", "value": "teamb", "isRegex": False, "isEqual": True} in silence[
        "matchers"
    ]
    assert silence["createdBy"] == "bob"
    states = {
        a["labels"]["alertname"]: a["status"]["state"] for a in stack.api.get("/alerts").json()
    }
    assert states["TeamC"] == "active"  # the member's silence on host h5 spared project teamc
    ack = httpx.post(f"{stack.url}/alerts/{mine[0]['fingerprint']}/ack", headers=bob)
    assert ack.status_code == 201
    theirs = next(a for a in stack.api.get("/alerts").json() if a["labels"]["alertname"] == "TeamC")
    assert (
        httpx.post(f"{stack.url}/alerts/{theirs['fingerprint']}/ack", headers=bob).status_code
        == 404
    )


def test_bad_input_gets_a_problem_that_says_what_to_change(stack: Stack):
    r = stack.api.post(
        "/alerts/receivers",
        json={"name": "s", "kind": "sms", "sms_template": "http://g.example/send?m={msg}"},
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "unknown field(s) msg" in r.text
    r = stack.api.post("/alerts/routes", json={"receiver": "hook", "severity": 'x"} or {'})
    assert r.status_code == 422
    r = stack.api.post("/alerts/silences", json={"matchers": [], "comment": "c"})
    assert r.status_code == 422


def test_without_alertmanager_the_api_says_how_to_get_one(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.delenv("ALERTMANAGER_URL", raising=False)
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    with TestClient(create_app(db, tmp_path, alertmanager_url="")) as client:
        r = client.get("/v1/alerts", headers={"authorization": f"Bearer {admin}"})
    db.engine.dispose()
    assert r.status_code == 503 and "ALERTMANAGER_URL" in r.json()["detail"]
