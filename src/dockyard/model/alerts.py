"""Alert delivery: receivers (where an alert goes), routes (which alerts go where),
and the silences and firing alerts read from Alertmanager.

A receiver's secrets (the IM robot's or gateway's URL, which carries its token; the
SMTP password; the adapter's token) go in and never come back: ``Receiver`` shows
the scheme and host of a URL only. ``ReceiverSpec`` holds everything, for rendering
Alertmanager's configuration and for the adapter; it never crosses the API.
"""

from __future__ import annotations

import re
import string
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from dockyard.model.base import Name, Schema

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _http_url(text: str) -> str:
    """http(s)://HOST[:PORT]/..., one line, no spaces: it ends up in a YAML file and
    in a request line."""
    if _CONTROL.search(text) or " " in text:
        raise ValueError("the URL contains a space or a control character; send one line")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc}); give http(s)://HOST[:PORT]/PATH") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("only http:// and https:// URLs with a host are accepted")
    return text


SMS_FIELDS = ("text", "status", "alertname", "severity", "summary", "count")


def _sms_template(text: str) -> str:
    """A URL whose ``{text}``-style fields are filled (URL-encoded) per notification."""
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text)]
    except ValueError as exc:
        raise ValueError(f"the template's braces do not pair up ({exc}); write {{text}}") from exc
    fields = [f for f, _, _ in parsed if f is not None]
    if any(spec or conv for f, spec, conv in parsed if f is not None):
        raise ValueError("a field takes no format or conversion; write {text}, not {text:...}")
    scheme, _, rest = text.partition("://")
    if "{" in scheme or "{" in rest.split("/", 1)[0]:
        raise ValueError("fields go in the path or the query, never in the gateway's address")
    unknown = sorted({f for f in fields if f not in SMS_FIELDS})
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)} in the template; use {{"
            + "}, {".join(SMS_FIELDS)
            + "}"
        )
    if "text" not in fields and "summary" not in fields:
        raise ValueError("the template sends no message; put {text} where the gateway wants it")
    _http_url(text.replace("{", "").replace("}", ""))
    return text


HttpUrl = Annotated[str, Field(min_length=8, max_length=2048), AfterValidator(_http_url)]
SmsTemplate = Annotated[str, Field(min_length=8, max_length=2048), AfterValidator(_sms_template)]
EmailAddress = Annotated[
    str,
    Field(
        max_length=254,
        pattern=r"^[^@\s\"<>,;:()\[\]\\]+@[A-Za-z0-9.-]+$",
        description="one address, user@domain",
    ),
]
SmartHost = Annotated[
    str,
    Field(
        max_length=260,
        pattern=r"^([A-Za-z0-9.-]+|\[[0-9a-fA-F:.]+\]):[0-9]{1,5}$",
        description="HOST:PORT of the SMTP server",
    ),
]
Line = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
Severity = Annotated[
    str, Field(pattern=r"^[a-z0-9_-]{1,32}$", description="e.g. critical, warning, info")
]


class ReceiverKind(StrEnum):
    webhook = "webhook"  # Alertmanager's webhook_configs: its JSON, as is
    email = "email"  # email_configs
    slack = "slack"  # slack_configs (an incoming-webhook URL)
    dingtalk = "dingtalk"  # through the server's adapter: markdown message
    wecom = "wecom"  # WeCom group robot, through the adapter: markdown message
    feishu = "feishu"  # Feishu/Lark robot, through the adapter: post message
    sms = "sms"  # an SMS gateway's URL template, through the adapter


ADAPTED = frozenset(
    {ReceiverKind.dingtalk, ReceiverKind.wecom, ReceiverKind.feishu, ReceiverKind.sms}
)
_FIELDS = {
    ReceiverKind.email: {"email_to", "smtp_smarthost"},
    ReceiverKind.sms: {"sms_template"},
}


class ReceiverCreate(Schema):
    name: Name
    kind: ReceiverKind
    url: HttpUrl | None = Field(default=None, description="webhook, slack and IM robots")
    sms_template: SmsTemplate | None = Field(
        default=None, description="the gateway's URL with {text} (and {severity}, ...) in it"
    )
    email_to: EmailAddress | None = None
    smtp_smarthost: SmartHost | None = None
    smtp_from: EmailAddress | None = None
    smtp_auth_user: Line | None = None
    smtp_auth_password: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    smtp_require_tls: bool = Field(default=True, description="refuse to send without STARTTLS")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> ReceiverCreate:
        given = {k for k in self.model_fields_set if getattr(self, k) is not None}
        given -= {"name", "kind", "smtp_require_tls", "adapter_token"}
        need = _FIELDS.get(self.kind, {"url"})
        allowed = need | (
            {"smtp_from", "smtp_auth_user", "smtp_auth_password"}
            if self.kind == ReceiverKind.email
            else set()
        )
        if missing := sorted(need - given):
            raise ValueError(f"a {self.kind} receiver needs {', '.join(missing)}")
        if extra := sorted(given - allowed):
            raise ValueError(f"a {self.kind} receiver takes no {', '.join(extra)}")
        if bool(self.smtp_auth_user) != bool(self.smtp_auth_password):
            raise ValueError("give smtp_auth_user and smtp_auth_password together")
        return self


class Receiver(Schema):
    """What a listing shows: no secret, a URL as its scheme and host only."""

    id: str
    name: str
    kind: ReceiverKind
    target: str = Field(description="the address, or a URL's scheme://host (its path is secret)")
    smtp_smarthost: str | None = None
    smtp_from: str | None = None
    smtp_auth_user: str | None = None
    via_adapter: bool = Field(description="Alertmanager posts to this server, which converts")
    created_at: datetime


class ReceiverSpec(ReceiverCreate):
    """Everything about a receiver, secrets too: for rendering and the adapter only."""

    adapter_token: str = Field(min_length=16, max_length=128)


class RouteCreate(Schema):
    receiver: Name
    severity: Severity | None = Field(default=None, description="match alerts of this severity")
    project: Name | None = Field(default=None, description="match alerts of this project")
    position: int | None = Field(
        default=None, ge=0, le=100000, description="order among routes (default: last)"
    )
    continue_matching: bool = Field(
        default=False,
        description="after a match, try the next routes too (Alertmanager's continue)",
    )


class Route(Schema):
    id: str
    receiver: str
    severity: str | None
    project: str | None
    position: int
    continue_matching: bool
    created_at: datetime


def redact(url: str) -> str:
    """scheme://host[:port] of ``url``: enough to recognise it, none of its token."""
    parts = urlsplit(url.replace("{", "").replace("}", ""))
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


# -- Alertmanager's side: silences, acknowledgements, firing alerts


class Matcher(Schema):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,99}$")]
    value: Annotated[str, Field(max_length=1024)]
    is_regex: bool = False
    is_equal: bool = True


Comment = Annotated[str, Field(min_length=1, max_length=1024)]
DURATION_MAX = 90 * 86400


class SilenceCreate(Schema):
    matchers: list[Matcher] = Field(min_length=1, max_length=32)
    duration_s: int = Field(default=7200, ge=60, le=DURATION_MAX)
    comment: Comment


class Ack(Schema):
    """An acknowledgement: a silence of exactly this alert's labels, by the caller."""

    comment: Comment = "acknowledged"
    duration_s: int = Field(default=86400, ge=60, le=DURATION_MAX)
