"""Sending a converted notification to its target, with bounded retries.

Who retries: both sides, on different horizons. The adapter tries ``ATTEMPTS``
times with a doubling backoff (0.5 s, 1 s: a blip of the robot's API or of the
network), all within Alertmanager's webhook timeout; when every try fails it
answers 502, and Alertmanager retries the whole notification with its own
backoff until the group's next interval. A gateway that took the message but
answered with an error is not retried here (it may have sent it: an SMS twice is
worse than late), but is reported as failed.

    DeliveryFailed (502)   the target refused or could not be reached; says why
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

import httpx

from dockyard.errors import DockyardError
from dockyard.model.alerts import ReceiverSpec
from dockyard.monitor.adapter import Outgoing

ATTEMPTS = 3
BACKOFF = 0.5  # seconds before the second try, doubled after each
TIMEOUT = 5.0  # per try


class DeliveryFailed(DockyardError):
    status = 502
    title = "Delivery failed"


async def deliver(
    out: Outgoing, attempts: int = ATTEMPTS, backoff: float = BACKOFF, timeout: float = TIMEOUT
) -> None:
    """Send ``out``; retry connection failures, 429 and 5xx; raise DeliveryFailed."""
    problem = ""
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff * 2 ** (attempt - 1))
            try:
                r = await client.request(out.method, out.url, json=out.body)
            except httpx.HTTPError as exc:
                problem = f"cannot reach {_host(out.url)}: {type(exc).__name__} {exc}"
                continue
            if r.status_code == 429 or r.status_code >= 500:
                problem = f"{_host(out.url)} answered HTTP {r.status_code}"
                continue
            refused = _refusal(r)
            if refused:
                raise DeliveryFailed(f"{_host(out.url)} refused the message: {refused}")
            return
    raise DeliveryFailed(f"{problem} (after {attempts} tries); check the receiver's URL")


def _refusal(r: httpx.Response) -> str:
    """Why the target refused, or "": a 4xx, or a robot's 200 with a non-zero code
    (DingTalk and WeCom answer errcode, Feishu code or StatusCode)."""
    if r.status_code >= 400:
        return f"HTTP {r.status_code} {r.text[:200]}"
    try:
        body: Any = r.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    for key in ("errcode", "code", "StatusCode"):
        if body.get(key) not in (None, 0, "0"):
            msg = body.get("errmsg") or body.get("msg") or body.get("StatusMessage") or ""
            return f"{key} {body[key]} {str(msg)[:200]}"
    return ""


def send_email(spec: ReceiverSpec, subject: str, text: str, timeout: float = TIMEOUT) -> None:
    """One e-mail through the receiver's SMTP server (test messages; alerts go through
    Alertmanager's own email_configs). STARTTLS when the server offers it, and
    refused without it when ``smtp_require_tls``."""
    host, _, port = (spec.smtp_smarthost or "").rpartition(":")
    msg = EmailMessage()
    msg["From"] = spec.smtp_from or "dockyard-alerts@localhost"
    msg["To"] = spec.email_to or ""
    msg["Subject"] = subject
    msg.set_content(text)
    try:
        with smtplib.SMTP(host.strip("[]"), int(port), timeout=timeout) as smtp:
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())  # verified, as AM does
                smtp.ehlo()
            elif spec.smtp_require_tls:
                raise DeliveryFailed(
                    f"{spec.smtp_smarthost} offers no STARTTLS and the receiver requires it; "
                    "add it again with --smtp-no-tls for a plain relay"
                )
            if spec.smtp_auth_user:
                smtp.login(spec.smtp_auth_user, spec.smtp_auth_password or "")
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(
            f"the mail to {spec.email_to} via {spec.smtp_smarthost} failed: {exc}"
        ) from exc


def _host(url: str) -> str:
    return httpx.URL(url).host or "the target"
