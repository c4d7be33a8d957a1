"""Continuous integration against the real API (SQLite, and PostgreSQL with
DOCKYARD_TEST_PG_URL): hooks, signed pushes, the build host's agent (played by the
test over HTTP with its token), logs, the controller's timeouts."""

from __future__ import annotations

import threading
import time

from tests.api import build_helpers
from tests.api.build_helpers import REPO, SHA, done_body, push_payload

cloud = build_helpers.cloud  # the fixture


def test_a_hook_shows_its_secret_once_and_never_again(cloud):
    hook = cloud.ok("POST", "/apps/shop/hooks", json={"repo": REPO, "branch": "main",
                                                       "stack": "web"})  # fmt: skip
    assert len(hook["secret"]) >= 16 and hook["url"] == "/v1/apps/shop/hooks/git"
    (listed,) = cloud.ok("GET", "/apps/shop/hooks")
    assert listed["id"] == hook["id"] and listed["secret"] is None
    assert hook["secret"] not in cloud.client.get("/openapi.json").text
    r = cloud.push(secret=hook["secret"])  # the server's own secret verifies
    assert r.status_code == 202 and len(r.json()["builds"]) == 1, r.text
    r = cloud.call("POST", "/apps/shop/hooks", json={"repo": REPO, "branch": "main",
                                                      "stack": "nope"})  # fmt: skip
    assert r.status_code == 404 and "no stack 'nope'" in r.json()["detail"]
    r = cloud.call("POST", "/apps/shop/hooks", json={"repo": "/etc", "branch": "main",
                                                      "stack": "web"})  # fmt: skip
    assert r.status_code == 422
    r = cloud.call("POST", "/apps/shop/hooks", json={"repo": REPO, "branch": "ab" * 20,
                                                      "stack": "web"})  # fmt: skip
    assert r.status_code == 422 and "reads as a commit id" in r.text  # would skip the branch check
    assert len(cloud.ok("GET", "/apps/shop/hooks")) == 1
    cloud.ok("DELETE", f"/apps/shop/hooks/{hook['id']}")
    assert cloud.ok("GET", "/apps/shop/hooks") == []


def test_a_signed_github_push_queues_a_build_of_the_hooks_repo(cloud):
    cloud.hook()
    r = cloud.push(push_payload(pusher="dana\x1b[31m" + "x" * 200))
    assert r.status_code == 202, r.text
    (build_id,) = r.json()["builds"]
    b = cloud.ok("GET", f"/builds/{build_id}")
    assert b["repo"] == REPO  # the hook's, never the payload's clone_url
    assert b["commit"] == SHA and b["ref"] == "main" and b["trigger"] == "push"
    assert b["created_by"].startswith("dana") and len(b["created_by"]) <= 63
    assert "\x1b" not in b["created_by"]
    assert b["status"] == "queued" and b["host"] == "b1" and b["app"] == "shop"
    (order,) = cloud.orders()["orders"]
    assert order["repo"] == REPO and order["commit"] == SHA and order["memory_mb"] == 1024
    assert order["push_repo"] == "127.0.0.1:5999/admin/shop"
    assert order["timeout_seconds"] == 600 and order["dockerfile"] == "Dockerfile"


def test_a_bad_or_missing_signature_is_401_and_starts_nothing(cloud):
    cloud.hook()
    for r in (cloud.push(secret="wrong-wrong-wrong-wrong"), cloud.push(secret=None),
              cloud.push(style="gitlab", secret="wrong-wrong-wrong")):  # fmt: skip
        assert r.status_code == 401, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert cloud.builds() == [] and cloud.orders()["orders"] == []


def test_a_gitlab_token_push_builds_its_checkout_sha(cloud):
    cloud.hook()
    payload = {"ref": "refs/heads/main", "after": "f" * 40, "checkout_sha": SHA,
               "user_username": "gitlab-gus"}  # fmt: skip
    r = cloud.push(payload, style="gitlab")
    assert r.status_code == 202, r.text
    (b,) = cloud.builds()
    assert b["commit"] == SHA and b["created_by"] == "gitlab-gus" and b["repo"] == REPO


def test_pushes_that_start_nothing_say_why(cloud):
    cloud.hook()
    cases = [
        (cloud.push(app="nosuch"), 202, "no hook of app 'nosuch' takes deliveries"),
        (cloud.push(push_payload(branch="dev")), 202, "follows branch 'dev'"),
        (cloud.push(push_payload(after="0" * 40)), 202, "was deleted"),
        (cloud.push(event="ping", raw=b'{"zen": "hi"}'), 200, "ping"),
        (cloud.push(event="issues", raw=b"{}"), 202, "not a push"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, r.text
        assert r.json()["builds"] == [] and words in r.json()["ignored"]
    r = cloud.push(raw=b"{not json")
    assert r.status_code == 400 and "not a push payload" in r.json()["detail"]
    r = cloud.push(raw=b"[" * 100_000)  # signed, nested past the parser's depth
    assert r.status_code == 400 and "not a push payload" in r.json()["detail"]
    assert cloud.builds() == []


def test_a_build_host_runs_it_and_auto_deploy_rolls_the_stack_to_its_image(cloud):
    cloud.hook(auto_deploy=True)
    (build_id,) = cloud.push().json()["builds"]
    assert cloud.orders(host="h1")["orders"] == []  # no builds label: never a build host
    polled = cloud.orders()
    assert [o["id"] for o in polled["orders"]] == [build_id]
    assert cloud.orders(since=polled["generation"], wait=0.2) == polled
    assert cloud.agent("POST", build_id, "start").status_code == 204
    assert cloud.agent("POST", build_id, "log", params={"offset": 0},
                       content=b"Step 1/2\n").status_code == 204  # fmt: skip
    assert cloud.agent("POST", build_id, "done", json=done_body()).status_code == 204
    b = cloud.ok("GET", f"/builds/{build_id}")
    assert b["status"] == "succeeded" and b["image"] == "shop-20261126-0123456"
    assert b["tag"] == "admin/shop:20261126-0123456" and b["digest"] == "sha256:" + "ab" * 32
    assert b["seconds"]["build"] == 20.0 and b["finished_at"] and b["deploy"]
    image = cloud.ok("GET", "/images/shop-20261126-0123456")
    assert image["status"] == "active" and image["digest"] == b["digest"]
    st = cloud.show()
    assert st["deploy"]["id"] == b["deploy"] and st["deploy"]["to_release"] == 2
    (_, rel) = cloud.ok("GET", "/apps/shop/stacks/web/releases")
    assert rel["image"] == "shop-20261126-0123456" and rel["created_by"] == "ci:dana"
    assert cloud.orders()["orders"] == []  # done: gone from the poll, the host is free


def test_a_refused_deploy_is_the_builds_reason_and_the_build_still_succeeded(cloud):
    cloud.hook(auto_deploy=True)
    cloud.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})  # runs on
    (build_id,) = cloud.push().json()["builds"]
    cloud.agent("POST", build_id, "start")
    assert cloud.agent("POST", build_id, "done", json=done_body()).status_code == 204
    b = cloud.ok("GET", f"/builds/{build_id}")
    assert b["status"] == "succeeded" and b["deploy"] is None
    assert "not deployed" in b["reason"] and "is running" in b["reason"]


def test_log_chunks_are_idempotent_by_offset_and_a_waiting_reader_wakes(cloud):
    cloud.hook()
    (build_id,) = cloud.push().json()["builds"]
    cloud.agent("POST", build_id, "start")
    log = f"/builds/{build_id}/log"
    for offset, data in ((0, b"abc"), (0, b"abc"), (2, b"cdef"), (6, b"")):
        r = cloud.agent("POST", build_id, "log", params={"offset": offset}, content=data)
        assert r.status_code == 204, r.text
    r = cloud.agent("POST", build_id, "log", params={"offset": 9}, content=b"gap")
    assert r.status_code == 409 and r.json()["offset"] == 6
    assert cloud.ok("GET", log) == {"text": "abcdef", "offset": 6, "done": False,
                                    "truncated": False}  # fmt: skip
    got = {}

    def read():
        t0 = time.monotonic()
        got["log"] = cloud.ok("GET", log, params={"offset": 6, "wait": 10})
        got["seconds"] = time.monotonic() - t0

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    cloud.agent("POST", build_id, "log", params={"offset": 6}, content="é\n".encode())
    reader.join(timeout=10)
    assert got["log"]["text"] == "é\n" and got["seconds"] < 5
    cloud.agent("POST", build_id, "failure", json={"error": "step 2: exit 1"})
    assert cloud.ok("GET", log, params={"offset": 9, "wait": 10})["done"] is True


def test_a_log_past_build_log_max_is_cut_and_says_so(cloud, monkeypatch):
    monkeypatch.setattr("dockyard.model.builds.BUILD_LOG_MAX", 10)
    cloud.hook()
    (build_id,) = cloud.push().json()["builds"]
    cloud.agent("POST", build_id, "start")
    for offset, data in ((0, b"12345678"), (8, b"abcdef"), (14, b"more")):
        r = cloud.agent("POST", build_id, "log", params={"offset": offset}, content=data)
        assert r.status_code == 204
    got = cloud.ok("GET", f"/builds/{build_id}/log")
    assert got["text"].startswith("12345678ab\n[the log was cut") and got["truncated"]
    assert "more" not in got["text"]


def test_a_failed_build_says_why_and_frees_its_host_for_the_next(cloud):
    cloud.hook()
    first = cloud.push().json()["builds"][0]
    cloud.agent("POST", first, "start")  # started: a newer push does not supersede it
    second = cloud.push(push_payload(after="1" * 40)).json()["builds"][0]
    assert [o["id"] for o in cloud.orders()["orders"]] == [first]  # one at a time
    assert "busy" in cloud.ok("GET", f"/builds/{second}")["reason"]
    r = cloud.agent("POST", first, "failure", json={"error": "docker build: exit 2"})
    assert r.status_code == 204
    b = cloud.ok("GET", f"/builds/{first}")
    assert b["status"] == "failed" and b["reason"] == "docker build: exit 2"
    assert [o["id"] for o in cloud.orders()["orders"]] == [second]
    assert cloud.agent("POST", first, "done", json=done_body()).status_code == 409


def test_a_build_past_its_timeout_fails_and_leaves_the_poll(cloud):
    cloud.hook()
    (build_id,) = cloud.push().json()["builds"]
    cloud.agent("POST", build_id, "start")
    cloud.tick(500)  # within timeout + margin (and the host's silence within its grace)
    assert cloud.ok("GET", f"/builds/{build_id}")["status"] == "running"
    assert cloud.tick(161 + 60) == ["b1"]
    b = cloud.ok("GET", f"/builds/{build_id}")
    assert b["status"] == "failed" and b["reason"] == "timed out after 600 s"
    assert cloud.orders()["orders"] == []
    r = cloud.agent("POST", build_id, "log", params={"offset": 0}, content=b"x")
    assert r.status_code == 409


def test_cancel_takes_the_order_out_of_the_poll(cloud):
    cloud.hook()
    (build_id,) = cloud.push().json()["builds"]
    b = cloud.ok("POST", f"/builds/{build_id}/cancel")
    assert b["status"] == "cancelled" and "admin" in b["reason"]
    assert cloud.orders()["orders"] == []
    r = cloud.agent("POST", build_id, "start")
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]
    assert cloud.call("POST", f"/builds/{build_id}/cancel").status_code == 409


def test_without_a_build_host_a_build_waits_and_says_what_to_start(cloud):
    cloud.hook()
    cloud.ok("POST", "/hosts/b1/disable", json={"reason": "maintenance"})
    (build_id,) = cloud.push().json()["builds"]
    b = cloud.ok("GET", f"/builds/{build_id}")
    assert b["host"] is None and "--builds --reserved-cores" in b["reason"]
    cloud.ok("POST", "/hosts/b1/enable")
    assert cloud.tick() == ["b1"]
    assert cloud.ok("GET", f"/builds/{build_id}")["host"] == "b1"
    cloud.tick(3600)  # b1 sent no heartbeat since: down, and it never started the build
    b = cloud.ok("GET", f"/builds/{build_id}")
    assert b["host"] is None and b["status"] == "queued"


def test_a_manual_build_and_tenancy(cloud):
    hook = cloud.hook()
    b = cloud.ok("POST", "/apps/shop/builds", json={"ref": "v1.2", "deploy": True})
    assert b["ref"] == "v1.2" and b["commit"] is None and b["trigger"] == "manual"
    assert b["auto_deploy"] is True and b["hook"] == hook["id"] and b["created_by"] == "admin"
    r = cloud.call("POST", "/apps/shop/builds", json={"ref": "../x"})
    assert r.status_code == 422
    cloud.ok("POST", "/projects", json={"name": "other"})
    eve = cloud.ok("POST", "/users", json={"name": "eve", "project": "other"})["token"]
    assert cloud.call("GET", f"/builds/{b['id']}", eve).status_code == 404
    assert cloud.call("POST", f"/builds/{b['id']}/cancel", eve).status_code == 404
    assert cloud.call("GET", f"/builds/{b['id']}/log", eve).status_code == 404
    assert cloud.call("GET", "/apps/shop/hooks", eve).status_code == 404
    assert cloud.ok("GET", "/builds", eve) == []
    r = cloud.call("GET", "/agent/hosts/b1/builds", cloud.agents["h1"])
    assert r.status_code == 403


def test_deleting_the_app_takes_its_hooks_and_builds(cloud):
    cloud.hook()
    cloud.push()
    cloud.ok("DELETE", "/apps/shop/stacks/web")
    cloud.ok("DELETE", "/apps/shop")
    assert cloud.builds() == [] and cloud.orders()["orders"] == []
    assert cloud.push().json()["ignored"] == "no hook of app 'shop' takes deliveries"


def test_a_manual_build_of_a_commit_id_follows_the_hooks_branch(cloud):
    """`build start --ref SHA` is built only if SHA is on the hook's branch: its order
    names that branch beside the commit, and the build host checks (compute/clone.py)."""
    cloud.hook(branch="release")
    b = cloud.ok("POST", "/apps/shop/builds", json={"ref": SHA})
    assert b["ref"] == "release" and b["commit"] == SHA
    (order,) = cloud.orders()["orders"]
    assert (order["ref"], order["commit"]) == ("release", SHA)
