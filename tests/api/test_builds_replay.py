"""Pushes a production team must not be hurt by: a redelivered or replayed push, an
older build finishing after a newer one, a flood of builds or hooks, a build host
dying mid-build, a payload naming who deployed (SQLite, and PostgreSQL)."""

from __future__ import annotations

from tests.api import build_helpers
from tests.api.build_helpers import SHA, done_body, push_payload

cloud = build_helpers.cloud  # the fixture
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def _done(cloud, build_id, commit):
    assert cloud.agent("POST", build_id, "start").status_code == 204
    body = done_body(commit=commit, tag=f"20261126-{commit[:7]}")
    assert cloud.agent("POST", build_id, "done", json=body).status_code == 204


def test_a_redelivered_push_starts_nothing_and_an_older_build_never_deploys_over_a_newer(cloud):
    cloud.hook(auto_deploy=True)
    (old,) = cloud.push(push_payload(after=SHA)).json()["builds"]
    again = cloud.push(push_payload(after=SHA))  # GitHub's "Redeliver", or a replay
    assert again.status_code == 202 and again.json()["builds"] == []
    assert "already" in again.json()["ignored"]
    _done(cloud, old, SHA)  # the older commit deployed first
    for _ in range(6):
        cloud.step()
        cloud.settle()
    (new,) = cloud.push(push_payload(after=OTHER, pusher="admin")).json()["builds"]
    _done(cloud, new, OTHER)
    deployed = cloud.ok("GET", f"/builds/{new}")["deploy"]
    assert deployed is not None
    releases = cloud.ok("GET", "/apps/shop/stacks/web/releases")
    assert releases[-1]["created_by"] == "ci:admin"  # a payload's name is not a user's

    replay = cloud.push(push_payload(after=SHA))  # the old push, replayed later
    assert replay.json()["builds"] == [] and cloud.show()["current_release"] == 3


def test_a_newer_push_supersedes_the_older_waiting_build_of_its_branch(cloud):
    cloud.hook(auto_deploy=True)
    (first,) = cloud.push(push_payload(after=SHA)).json()["builds"]
    assert cloud.agent("POST", first, "start").status_code == 204  # b1 is busy with it
    (second,) = cloud.push(push_payload(after=OTHER)).json()["builds"]
    third_sha = "1" * 40
    (third,) = cloud.push(push_payload(after=third_sha)).json()["builds"]
    second_row = cloud.ok("GET", f"/builds/{second}")
    assert second_row["status"] == "cancelled" and third in second_row["reason"]
    _done(cloud, first, SHA)
    assert cloud.ok("GET", f"/builds/{third}")["status"] == "queued"
    _done(cloud, third, third_sha)
    assert cloud.ok("GET", f"/builds/{third}")["status"] == "succeeded"


def test_an_older_build_finishing_last_is_not_deployed(cloud):
    t2 = cloud.register("b2", labels={"dockyard.builds": "1"})
    cloud.hook(auto_deploy=True)
    (older,) = cloud.push(push_payload(after=SHA)).json()["builds"]
    assert cloud.agent("POST", older, "start").status_code == 204  # on b1
    (newer,) = cloud.push(push_payload(after=OTHER)).json()["builds"]
    assert cloud.ok("GET", f"/builds/{newer}")["host"] == "b2"
    body = done_body(commit=OTHER, tag=f"20261126-{OTHER[:7]}")
    for verb, kw in (("start", {}), ("done", {"json": body})):
        r = cloud.call("POST", f"/agent/builds/{newer}/{verb}", t2, **kw)
        assert r.status_code == 204, r.text
    for _ in range(6):
        cloud.step()
        cloud.settle()
    assert cloud.show()["current_release"] == 2
    _done(cloud, older, SHA)  # the older commit's build ends last
    late = cloud.ok("GET", f"/builds/{older}")
    assert late["status"] == "succeeded" and late["deploy"] is None
    assert newer in late["reason"]
    assert cloud.show()["current_release"] == 2 and cloud.show()["deploy"]["status"] != "running"


def test_hooks_and_waiting_builds_are_bounded(cloud):
    from dockyard.db.builds import MAX_ACTIVE_BUILDS_PER_APP, MAX_HOOKS_PER_APP

    for _ in range(MAX_HOOKS_PER_APP):
        cloud.hook()
    r = cloud.call("POST", "/apps/shop/hooks", json={"repo": build_helpers.REPO,
                                                      "branch": "x", "stack": "web"})  # fmt: skip
    assert r.status_code == 409 and "delete one first" in r.json()["detail"]
    hook = cloud.ok("GET", "/apps/shop/hooks")[0]["id"]
    for i in range(MAX_ACTIVE_BUILDS_PER_APP):
        r = cloud.call("POST", "/apps/shop/builds", json={"ref": f"{i:040x}", "hook": hook})
        assert r.status_code == 201, r.text
    r = cloud.call("POST", "/apps/shop/builds", json={"ref": "main", "hook": hook})
    assert r.status_code == 409 and "cancel some" in r.json()["detail"]
    assert len(cloud.builds()) == MAX_ACTIVE_BUILDS_PER_APP


def test_a_build_whose_host_goes_down_mid_build_fails_and_frees_the_queue(cloud):
    cloud.hook()
    (b,) = cloud.push().json()["builds"]
    assert cloud.agent("POST", b, "start").status_code == 204
    cloud.tick(seconds=0)
    assert cloud.ok("GET", f"/builds/{b}")["status"] == "running"
    cloud.tick(seconds=120)  # a short outage of b1: its agent goes on building
    assert cloud.ok("GET", f"/builds/{b}")["status"] == "running"
    cloud.tick(seconds=540)  # silent for 11 minutes, the 600 s timeout not yet passed
    row = cloud.ok("GET", f"/builds/{b}")
    assert row["status"] == "failed" and "went down" in row["reason"], row
    assert cloud.orders()["orders"] == []
