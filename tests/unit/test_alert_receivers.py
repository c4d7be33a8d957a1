"""Rendering receivers and routes for Alertmanager (checked by the real amtool), the
adapter's conversions, and the validation of what admins type."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from dockyard.model.alerts import ReceiverCreate, ReceiverSpec, Route
from dockyard.monitor import adapter
from dockyard.monitor.receivers import render

TOKEN = "t" * 43


def spec(name: str, kind: str, **kw: object) -> ReceiverSpec:
    return ReceiverSpec(name=name, kind=kind, adapter_token=TOKEN, **kw)


RECEIVERS = [
    spec("hook", "webhook", url="http://127.0.0.1:9/hook"),
    spec(
        "mail",
        "email",
        email_to="oncall@example.com",
        smtp_smarthost="127.0.0.1:25",
        smtp_auth_user="am",
        smtp_auth_password="s3cret",
        smtp_require_tls=False,
    ),
    spec("chat", "slack", url="https://hooks.slack.com/services/T0/B0/XYZ"),
    spec("ding", "dingtalk", url="https://oapi.dingtalk.com/robot/send?access_token=abc"),
    spec("wx", "wecom", url="https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"),
    spec("fs", "feishu", url="https://open.feishu.cn/open-apis/bot/v2/hook/h"),
    spec("sms", "sms", sms_template="https://sms.example/send?to=138&text={text}"),
]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ROUTES = [
    Route(
        id="r1",
        receiver="ding",
        severity="critical",
        project=None,
        position=0,
        continue_matching=True,
        created_at=NOW,
    ),
    Route(
        id="r2",
        receiver="mail",
        severity=None,
        project="shop",
        position=1,
        continue_matching=False,
        created_at=NOW,
    ),
    Route(
        id="r3",
        receiver="sms",
        severity="critical",
        project="shop",
        position=2,
        continue_matching=False,
        created_at=NOW,
    ),
]


def test_rendered_config_passes_amtool_check_config(tmp_path):
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (scripts/packages.sh's test packages)")
    out = render(
        RECEIVERS,
        ROUTES,
        adapter_url="https://10.0.0.1:8787/v1/alerts/adapter",
        ca_file="/var/lib/dockyard/ca.pem",
    )
    config = {
        "global": {"resolve_timeout": "5m"},
        "route": {**out["route"], "group_by": ["..."]},
        "receivers": out["receivers"],
    }
    path = tmp_path / "alertmanager.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    done = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 receivers" in done.stdout  # null and the seven


def test_native_receivers_and_adapter_hooks():
    out = render(RECEIVERS, ROUTES, adapter_url="http://127.0.0.1:8787/v1/alerts/adapter/")
    by_name = {r["name"]: r for r in out["receivers"]}
    assert by_name["null"] == {"name": "null"}
    assert by_name["hook"]["webhook_configs"][0]["url"] == "http://127.0.0.1:9/hook"
    mail = by_name["mail"]["email_configs"][0]
    assert mail["smarthost"] == "127.0.0.1:25" and mail["auth_password"] == "s3cret"
    assert mail["require_tls"] is False
    assert by_name["chat"]["slack_configs"][0]["api_url"].endswith("/XYZ")
    for name in ("ding", "wx", "fs", "sms"):
        hook = by_name[name]["webhook_configs"][0]
        assert hook["url"] == f"http://127.0.0.1:8787/v1/alerts/adapter/{name}"
        assert hook["http_config"]["authorization"] == {"type": "Bearer", "credentials": TOKEN}
        assert "dingtalk" not in json.dumps(hook)  # the robot's URL stays in the server


def test_routes_keep_their_order_and_matchers():
    route = render(RECEIVERS, ROUTES)["route"]
    assert route["receiver"] == "null"
    assert route["routes"] == [
        {"receiver": "ding", "continue": True, "matchers": ['severity="critical"']},
        {"receiver": "mail", "continue": False, "matchers": ['project="shop"']},
        {
            "receiver": "sms",
            "continue": False,
            "matchers": ['severity="critical"', 'project="shop"'],
        },
    ]


PAYLOAD = {
    "status": "firing",
    "commonLabels": {"alertname": "HostDown", "severity": "critical"},
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "HostDown", "severity": "critical", "host": f"h{i}"},
            "annotations": {"summary": f"host h{i} is down"},
        }
        for i in range(2)
    ],
}


def test_dingtalk_wecom_feishu_bodies():
    ding = adapter.outgoing(RECEIVERS[3], PAYLOAD)
    assert ding.method == "POST" and ding.url == RECEIVERS[3].url
    assert ding.body is not None
    assert ding.body["msgtype"] == "markdown"
    assert ding.body["markdown"]["title"] == "[FIRING:2] HostDown"
    assert "- host h1 is down [severity=critical, host=h1]" in ding.body["markdown"]["text"]
    wx = adapter.outgoing(RECEIVERS[4], PAYLOAD).body
    assert wx is not None and wx["msgtype"] == "markdown"
    assert "host h0 is down" in wx["markdown"]["content"]
    fs = adapter.outgoing(RECEIVERS[5], PAYLOAD).body
    assert fs is not None and fs["msg_type"] == "post"
    post = fs["content"]["post"]["zh_cn"]
    assert post["title"] == "[FIRING:2] HostDown"
    assert post["content"][1] == [
        {"tag": "text", "text": "host h1 is down [severity=critical, host=h1]"}
    ]


def test_sms_template_is_filled_url_encoded_and_cannot_change_the_host():
    evil = {
        "status": "firing",
        "alerts": [
            {"labels": {"alertname": "X"}, "annotations": {"summary": "a&to=999#@evil.example/"}}
        ],
    }
    out = adapter.outgoing(RECEIVERS[6], evil)
    parts = urlsplit(out.url)
    assert out.method == "GET" and parts.hostname == "sms.example"
    query = parse_qs(parts.query)
    assert query["to"] == ["138"]
    assert query["text"][0].startswith("[FIRING:1] X; a&to=999#@evil.example/")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"kind": "webhook", "url": "ftp://x.example/h"}, "only http:// and https://"),
        ({"kind": "webhook", "url": "http://x.example/h\nX-Evil: 1"}, "control character"),
        ({"kind": "webhook"}, "needs url"),
        ({"kind": "email", "email_to": "a@b.example"}, "needs smtp_smarthost"),
        (
            {"kind": "email", "email_to": "a@b.example\r\nBcc: x@y", "smtp_smarthost": "h:25"},
            "email_to",
        ),
        (
            {
                "kind": "email",
                "email_to": "a@b.example",
                "smtp_smarthost": "h:25",
                "smtp_auth_user": "u",
            },
            "together",
        ),
        ({"kind": "sms", "sms_template": "http://g.example/?m={message}"}, "unknown field"),
        ({"kind": "sms", "sms_template": "http://g.example/?m=hi"}, "put {text}"),
        ({"kind": "sms", "sms_template": "https://{summary}.g.example/?m={text}"}, "address"),
        ({"kind": "sms", "sms_template": "https://g.example:{text}/"}, "address"),
        ({"kind": "sms", "sms_template": "http://g.example/?m={text:>999999999}"}, "no format"),
        ({"kind": "sms", "sms_template": "http://g.example/?m={text!r}"}, "no format"),
        (
            {"kind": "dingtalk", "url": "http://d.example/", "email_to": "a@b.example"},
            "takes no email_to",
        ),
    ],
)
def test_bad_receivers_are_refused_with_what_to_change(body, words):
    with pytest.raises(ValidationError) as refused:
        ReceiverCreate.model_validate({"name": "r", **body})
    assert words in str(refused.value)
