"""``dockyard alert ...``: where alerts go (receivers, routes), what fires, silences, acks.

Everything goes through the Dockyard server (it proxies Alertmanager's API), so
DOCKYARD_URL and DOCKYARD_TOKEN are all the CLI needs.
"""

from __future__ import annotations

import argparse
import sys

from dockyard import units
from dockyard.cli.client import Api, CliError
from dockyard.cli.output import emit

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

IM_KINDS = ("dingtalk", "wecom", "feishu", "slack")
RECEIVER_COLUMNS = [
    ("NAME", lambda r: r["name"]),
    ("KIND", lambda r: r["kind"]),
    ("TARGET", lambda r: r["target"]),
    ("VIA", lambda r: "adapter" if r["via_adapter"] else "alertmanager"),
]
ROUTE_COLUMNS = [
    ("ID", lambda r: r["id"]),
    ("POSITION", lambda r: r["position"]),
    ("SEVERITY", lambda r: r["severity"] or "*"),
    ("PROJECT", lambda r: r["project"] or "*"),
    ("RECEIVER", lambda r: r["receiver"]),
    ("CONTINUE", lambda r: "yes" if r["continue_matching"] else "no"),
]
ALERT_COLUMNS = [
    ("ID", lambda a: a["fingerprint"]),
    ("ALERT", lambda a: a["labels"].get("alertname")),
    ("SEVERITY", lambda a: a["labels"].get("severity")),
    ("PROJECT", lambda a: a["labels"].get("project")),
    ("HOST", lambda a: a["labels"].get("host")),
    ("STATE", lambda a: a["status"]["state"]),
    ("SINCE", lambda a: a["startsAt"][:19]),
    ("SUMMARY", lambda a: a["annotations"].get("summary")),
]
SILENCE_COLUMNS = [
    ("ID", lambda s: s["id"]),
    ("STATE", lambda s: s["status"]["state"]),
    ("MATCHERS", lambda s: ",".join(_matcher_text(m) for m in s["matchers"])),
    ("ENDS", lambda s: s["endsAt"][:19]),
    ("BY", lambda s: s["createdBy"]),
    ("COMMENT", lambda s: s["comment"]),
]


def add_receiver(api: Api, a: argparse.Namespace) -> None:
    emit(api.post("/alerts/receivers", receiver_body(a)), a.format, RECEIVER_COLUMNS)


def receiver_body(a: argparse.Namespace) -> dict[str, Any]:
    """The request for ``receiver add``; the password is read from its file here."""
    body: dict[str, Any] = {"name": a.name}
    if a.webhook:
        body.update(kind="webhook", url=a.webhook)
    elif a.im:
        body.update(kind=a.im[0], url=a.im[1])
        if a.im[0] not in IM_KINDS:
            raise CliError(f"--im takes one of {', '.join(IM_KINDS)}, not {a.im[0]!r}")
    elif a.sms:
        body.update(kind="sms", sms_template=a.sms)
    else:
        if not a.smtp:
            raise CliError("--email needs --smtp HOST:PORT (the mail server to send through)")
        body.update(kind="email", email_to=a.email, smtp_smarthost=a.smtp)
        body.update(smtp_require_tls=not a.smtp_no_tls)
        if a.smtp_from:
            body["smtp_from"] = a.smtp_from
        if bool(a.smtp_auth_user) != bool(a.smtp_auth_password_file):
            raise CliError("give --smtp-auth-user and --smtp-auth-password-file together")
        if a.smtp_auth_user:
            body.update(smtp_auth_user=a.smtp_auth_user, smtp_auth_password=_secret(a))
    return body


def _secret(a: argparse.Namespace) -> str:
    try:
        with open(a.smtp_auth_password_file, encoding="utf-8") as f:
            password = f.read().strip("\r\n")
    except OSError as exc:
        raise CliError(f"cannot read --smtp-auth-password-file: {exc}") from exc
    if not password:
        raise CliError(f"{a.smtp_auth_password_file} is empty; put the SMTP password in it")
    return password


def add_route(api: Api, a: argparse.Namespace) -> None:
    body = {"receiver": a.receiver, "continue_matching": a.continue_matching}
    body.update({k: v for k in ("severity", "project", "position") if (v := getattr(a, k))})
    if a.position == 0:
        body["position"] = 0
    emit(api.post("/alerts/routes", body), a.format, ROUTE_COLUMNS)


def create_silence(api: Api, a: argparse.Namespace) -> None:
    body = {
        "matchers": [parse_matcher(m) for m in a.match],
        "duration_s": _duration(a.duration),
        "comment": a.comment,
    }
    created = api.post("/alerts/silences", body)
    print(created["id"] if a.format == "table" else created)


def ack(api: Api, a: argparse.Namespace) -> None:
    body = {"comment": a.comment, "duration_s": _duration(a.duration)}
    done = api.post(f"/alerts/{a.id}/ack", body)
    print(f"alert {a.id} acknowledged: silence {done['id']} (expire it to un-acknowledge)")


def parse_matcher(text: str) -> dict[str, Any]:
    """``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``."""
    # the first operator in the text wins; two-character ones before "=" at one place
    ops = (("!~", False, True), ("=~", True, True), ("!=", False, False), ("=", True, False))
    at = [(text.find(op), -len(op), op, eq, rx) for op, eq, rx in ops if op in text]
    if not at or min(at)[0] == 0:
        raise CliError(
            f"--match {text!r}: write NAME=VALUE (or !=, =~, !~), like severity=critical"
        )
    _, _, op, is_equal, is_regex = min(at)
    name, _, value = text.partition(op)
    return {"name": name, "value": value, "is_equal": is_equal, "is_regex": is_regex}


def _matcher_text(m: dict[str, Any]) -> str:
    ops = {(True, False): "=", (False, False): "!=", (True, True): "=~", (False, True): "!~"}
    return f"{m['name']}{ops[(m.get('isEqual', True), m['isRegex'])]}{m['value']}"


def _duration(text: str) -> int:
    try:
        return units.parse_duration(text)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def add_parsers(sub: Any, fmt: argparse.ArgumentParser) -> None:
    alert = sub.add_parser("alert", help="alerts: receivers, routes, firing alerts, silences")
    verbs = alert.add_subparsers(dest="verb", required=True)
    _receiver_parsers(verbs, fmt)
    _route_parsers(verbs, fmt)
    p = verbs.add_parser("list", parents=[fmt], help="active alerts (from Alertmanager)")
    p.set_defaults(run=lambda api, a: emit(api.get("/alerts"), a.format, ALERT_COLUMNS))
    _silence_parsers(verbs, fmt)
    p = verbs.add_parser(
        "ack",
        help="acknowledge an alert: a silence of exactly its labels, with you as author",
    )
    p.add_argument("id", help="the alert's ID from `dockyard alert list`")
    p.add_argument("--comment", default="acknowledged")
    p.add_argument("--duration", default="24h", help="how long it stays silent (default 24h)")
    p.set_defaults(run=ack)


def _receiver_parsers(verbs: Any, fmt: argparse.ArgumentParser) -> None:
    rec = verbs.add_parser("receiver", help="where alerts are delivered")
    rv = rec.add_subparsers(dest="what", required=True)
    p = rv.add_parser("add", parents=[fmt], help="a webhook, e-mail, IM robot or SMS gateway")
    p.add_argument("name")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--webhook", metavar="URL", help="Alertmanager's webhook JSON, POSTed")
    kind.add_argument("--email", metavar="ADDR", help="e-mail to ADDR (with --smtp)")
    kind.add_argument(
        "--im", nargs=2, metavar=("KIND", "URL"), help=f"an IM robot: {'|'.join(IM_KINDS)} URL"
    )
    kind.add_argument(
        "--sms", metavar="URL_TEMPLATE", help="an SMS gateway's URL with {text} where the text goes"
    )
    p.add_argument("--smtp", metavar="HOST:PORT", help="the mail server (for --email)")
    p.add_argument("--smtp-from", metavar="ADDR")
    p.add_argument("--smtp-auth-user", metavar="USER")
    p.add_argument("--smtp-auth-password-file", metavar="FILE", help="holds the password")
    p.add_argument(
        "--smtp-no-tls", action="store_true", help="send without STARTTLS (a plain local relay)"
    )
    p.set_defaults(run=add_receiver)
    p = rv.add_parser("list", parents=[fmt], help="receivers (secrets never shown)")
    p.set_defaults(
        run=lambda api, a: emit(api.get("/alerts/receivers"), a.format, RECEIVER_COLUMNS)
    )
    p = rv.add_parser("delete", help="refused while a route sends to it")
    p.add_argument("name")
    p.set_defaults(run=lambda api, a: _say(api.delete(f"/alerts/receivers/{a.name}"), a.name))
    p = rv.add_parser("test", help="send a test message to it now")
    p.add_argument("name")
    p.set_defaults(run=lambda api, a: _sent(api.post(f"/alerts/receivers/{a.name}/test")))


def _route_parsers(verbs: Any, fmt: argparse.ArgumentParser) -> None:
    route = verbs.add_parser("route", help="which alerts go to which receiver")
    rv = route.add_subparsers(dest="what", required=True)
    p = rv.add_parser("add", parents=[fmt], help="tried in position order; the first match wins")
    p.add_argument("--receiver", required=True)
    p.add_argument("--severity", help="match this severity only (default: any)")
    p.add_argument("--project", help="match this project's alerts only (default: any)")
    p.add_argument("--position", type=int, help="order among routes (default: last)")
    p.add_argument(
        "--continue",
        dest="continue_matching",
        action="store_true",
        help="after a match, try the next routes too",
    )
    p.set_defaults(run=add_route)
    p = rv.add_parser("list", parents=[fmt])
    p.set_defaults(run=lambda api, a: emit(api.get("/alerts/routes"), a.format, ROUTE_COLUMNS))
    p = rv.add_parser("delete")
    p.add_argument("id")
    p.set_defaults(run=lambda api, a: _say(api.delete(f"/alerts/routes/{a.id}"), a.id))


def _silence_parsers(verbs: Any, fmt: argparse.ArgumentParser) -> None:
    sil = verbs.add_parser("silence", help="mute matching alerts for a while")
    sv = sil.add_subparsers(dest="what", required=True)
    p = sv.add_parser("create", parents=[fmt], help="prints the silence's ID")
    p.add_argument(
        "--match",
        action="append",
        required=True,
        metavar="NAME=VALUE",
        help="repeatable; also NAME!=VALUE, NAME=~REGEX, NAME!~REGEX",
    )
    p.add_argument("--duration", default="2h", help="default 2h")
    p.add_argument("--comment", required=True, help="why (shown to everyone)")
    p.set_defaults(run=create_silence)
    p = sv.add_parser("list", parents=[fmt])
    p.set_defaults(run=lambda api, a: emit(api.get("/alerts/silences"), a.format, SILENCE_COLUMNS))
    p = sv.add_parser("expire", help="end a silence (or an acknowledgement) now")
    p.add_argument("id")
    p.set_defaults(run=lambda api, a: _say(api.delete(f"/alerts/silences/{a.id}"), a.id, "expired"))


def _say(_: Any, what: str, done: str = "deleted") -> None:
    print(f"{what} {done}")


def _sent(answer: dict[str, Any]) -> None:
    print(f"test message sent to {answer['receiver']}")
    sys.stdout.flush()
