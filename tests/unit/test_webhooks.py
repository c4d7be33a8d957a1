"""paas/webhooks.py: signatures by style, constant-time checks, push payloads; and the
build log's UTF-8 boundaries (db/build_log.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from dockyard.db.build_log import _whole
from dockyard.paas import webhooks

SHA = "a" * 40


def test_a_github_signature_verifies_only_with_its_secret_and_body():
    body = b'{"ref": "refs/heads/main"}'
    mac = hmac.new(b"secret-1234567890", body, hashlib.sha256).hexdigest()
    sig = webhooks.signature({"x-hub-signature-256": "sha256=" + mac, "x-github-event": "push"})
    assert sig is not None and sig.style == "github"
    assert webhooks.verifies(sig, body, "secret-1234567890")
    assert not webhooks.verifies(sig, body + b" ", "secret-1234567890")
    assert not webhooks.verifies(sig, body, "secret-0000000000")
    bare = webhooks.signature({"x-hub-signature-256": mac})  # no sha256= prefix
    assert bare is not None and not webhooks.verifies(bare, body, "secret-1234567890")
    assert webhooks.signature({"x-github-event": "push"}) is None


def test_a_gitlab_token_is_the_secret_itself():
    sig = webhooks.signature({"x-gitlab-token": "tok-tok-tok-tok", "x-gitlab-event": "Push Hook"})
    assert sig is not None and webhooks.verifies(sig, b"anything", "tok-tok-tok-tok")
    assert not webhooks.verifies(sig, b"anything", "tok-tok-tok-to")


def test_push_payloads():
    gh = webhooks.Signature("github", "", "push")
    push = webhooks.push_of(gh, {"ref": "refs/heads/a/b", "after": SHA, "pusher": {"name": "x"}})
    assert (push.branch, push.commit, push.pusher, push.ignored) == ("a/b", SHA, "x", None)
    tag = webhooks.push_of(gh, {"ref": "refs/tags/v1", "after": SHA})
    assert tag.ignored and "not a branch" in tag.ignored
    gone = webhooks.push_of(gh, {"ref": "refs/heads/a", "after": "0" * 40})
    assert gone.ignored and "deleted" in gone.ignored
    for bad in ([], {"after": SHA}, {"ref": "refs/heads/a", "after": "zz"}):
        with pytest.raises(ValueError):
            webhooks.push_of(gh, bad)
    ping = webhooks.push_of(webhooks.Signature("github", "", "ping"), None)
    assert ping.event == "ping" and ping.ignored


def test_a_log_read_never_ends_inside_a_character():
    text = "aé€😀".encode()
    for cut in range(len(text) + 1):
        kept = _whole(text[:cut])
        assert text.startswith(kept) and kept.decode() in ("", "a", "aé", "aé€", "aé€😀")
        assert cut - len(kept) < 4


def test_a_build_log_shows_terminal_escapes_instead_of_obeying_them() -> None:
    from dockyard.cli.builds import printable

    hostile = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\nStep 1/2\tok\x9b"
    shown = printable(hostile)
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown
    assert "\r" not in shown and "Step 1/2\tok" in shown and shown.count("\n") == 1


def test_a_repository_url_carries_no_credentials() -> None:
    import pytest
    from pydantic import ValidationError

    from dockyard.model.builds import HookCreate

    for url in ("https://ghp_token@github.com/x.git", "https://u:pw@git.example/x.git",
                "ssh://git:pw@git.example/x.git"):  # fmt: skip
        with pytest.raises(ValidationError, match="no credentials"):
            HookCreate(repo=url, branch="main", stack="web")
    assert HookCreate(repo="ssh://git@git.example/x.git", branch="main", stack="web")
