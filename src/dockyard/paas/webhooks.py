"""Git hosts' push webhooks: who signed a delivery, and what it pushed (pure).

    GitHub style   X-Hub-Signature-256: sha256=HEX(HMAC-SHA256(secret, raw body))
                   X-GitHub-Event: push | ping | ...
    GitLab style   X-Gitlab-Token: the secret itself
                   X-Gitlab-Event: Push Hook | ...

``signature(headers)`` says which style a delivery uses (None: unsigned), ``verifies``
checks it against one hook's secret in constant time, ``push_of`` reads the branch,
the commit and the pusher out of a verified body. Nothing here trusts the payload's
repository URL: a build clones the hook's registered repository (db/builds.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ZERO_SHA = "0" * 40
SHA = re.compile(r"^[0-9a-f]{40}$")
PUSHER_MAX = 63


@dataclass(frozen=True)
class Signature:
    style: str  # github | gitlab
    value: str  # the hex HMAC (github) or the token (gitlab)
    event: str  # the event header's value, as sent


@dataclass(frozen=True)
class Push:
    """What a verified push delivery asks for. ``ignored``: why it starts nothing."""

    event: str  # push, ping, or another event's name
    branch: str | None = None
    commit: str | None = None
    pusher: str = "git"
    ignored: str | None = None


def signature(headers: Mapping[str, str]) -> Signature | None:
    """The delivery's signature, by the headers it came with (lower-case names)."""
    hub = headers.get("x-hub-signature-256")
    if hub is not None:
        value = hub[len("sha256=") :] if hub.startswith("sha256=") else ""
        return Signature("github", value.strip().lower(), headers.get("x-github-event", ""))
    token = headers.get("x-gitlab-token")
    if token is not None:
        return Signature("gitlab", token, headers.get("x-gitlab-event", ""))
    return None


def verifies(sig: Signature, body: bytes, secret: str) -> bool:
    """Whether ``secret`` signed ``body`` (compared in constant time)."""
    if sig.style == "github":
        want = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(want.encode(), sig.value.encode("ascii", "replace"))
    return hmac.compare_digest(secret.encode(), sig.value.encode("utf-8", "replace"))


def push_of(sig: Signature, payload: Any) -> Push:
    """The push a verified delivery describes; ``ValueError`` when its body is not a
    push payload (the API answers 400)."""
    if sig.style == "github" and sig.event == "ping":
        return Push("ping", ignored="ping: the hook is reachable and its secret verifies")
    is_push = sig.event == "push" if sig.style == "github" else sig.event == "Push Hook"
    if not is_push:
        return Push(sig.event or "?", ignored=f"event {sig.event[:64]!r} is not a push")
    if not isinstance(payload, dict):
        raise ValueError("a push payload is a JSON object")
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref:
        raise ValueError("a push payload names its ref ('ref': 'refs/heads/BRANCH')")
    if not ref.startswith("refs/heads/"):
        return Push("push", ignored=f"{ref[:255]!r} is not a branch")
    branch, pusher = ref[len("refs/heads/") :], _pusher(sig, payload)
    after = payload.get("after")
    if after == ZERO_SHA:
        return Push("push", branch, pusher=pusher, ignored=f"branch {branch!r} was deleted")
    commit = payload.get("checkout_sha") if sig.style == "gitlab" else None
    commit = commit or after
    if not isinstance(commit, str) or not SHA.match(commit):
        raise ValueError("a push payload names its commit: 'after' (40 hex digits)")
    return Push("push", branch, commit, pusher)


def _pusher(sig: Signature, payload: dict[str, Any]) -> str:
    """Who pushed, as the git host says (bounded, printable): a label, never an
    identity Dockyard checked."""
    if sig.style == "github":
        who = payload.get("pusher")
        name = who.get("name") if isinstance(who, dict) else None
    else:
        name = payload.get("user_username") or payload.get("user_name")
    text = "".join(c for c in name if c.isprintable()) if isinstance(name, str) else ""
    return text.strip()[:PUSHER_MAX] or "git"
