"""The PaaS's bad input: each a clear problem+json, and nothing half-made."""

from __future__ import annotations

import pytest

from tests.api import paas_helpers

paas = paas_helpers.paas  # the fixture


def _nothing_made(cloud):
    assert cloud.ok("GET", "/apps/shop/stacks") == []
    assert cloud.ok("GET", "/instances") == []
    assert cloud.ok("GET", "/server-groups") == []


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"image": "nope"}, 404, "image 'nope' does not exist"),
        ({"flavor": "huge"}, 404, "flavor 'huge' does not exist"),
        ({"files": [{"path": "/proc/x", "content": ""}]}, 422, "/proc; put the file in /etc"),
        ({"files": [{"path": "etc/x", "content": ""}]}, 422, "absolute path"),
        ({"env": {"1X": "y"}}, 422, "not a variable name"),
        ({"health_check": {"kind": "tcp"}}, 422, "needs a port"),
        ({"max_unavailable": "150%"}, 422, "at most 100%"),
        ({"max_surge": "lots"}, 422, "max_surge"),
        ({"replicas": 101}, 422, "replicas"),
        ({"strategy": "yolo"}, 422, "in-place"),
        ({"name": "x" * 60}, 422, "longer than 63 characters; choose shorter app or stack"),
    ],
)
def test_a_bad_stack_is_refused_and_leaves_nothing(paas, body, status, words):
    r = paas.stack(**body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert words in r.text
    _nothing_made(paas)


def test_replicas_beyond_the_quota_are_403_and_leave_nothing(paas):
    paas.ok("POST", "/projects", json={"name": "p1"})
    alice = paas.ok("POST", "/users", json={"name": "alice", "project": "p1"})["token"]
    paas.ok("PATCH", "/projects/p1/quota", json={"instances": 2})
    paas.ok("POST", "/apps", alice, json={"name": "shop"})
    body = {"name": "web", "image": "img", "flavor": "small", "network": "net", "replicas": 3}
    r = paas.call("POST", "/apps/shop/stacks", alice, json=body)
    assert r.status_code == 403 and "instances limit 2" in r.json()["detail"]
    assert paas.ok("GET", "/apps/shop/stacks", alice) == []
    assert paas.ok("GET", "/instances", alice) == []
    assert paas.ok("GET", "/server-groups", alice) == []
    # within the quota it works; a scale past it is refused the same way, nothing added
    body["replicas"] = 2
    assert paas.call("POST", "/apps/shop/stacks", alice, json=body).status_code == 201
    r = paas.call("POST", "/apps/shop/stacks/web/scale", alice, json={"replicas": 4})
    assert r.status_code == 409 and "is running" in r.json()["detail"]  # its create
    for inst in paas.ok("GET", "/apps/shop/stacks/web", alice)["instances"]:
        paas.report(paas.ok("GET", f"/instances/{inst['id']}"), power_state="running",
                    task_done="spawning")  # fmt: skip
    paas.step()
    r = paas.call("POST", "/apps/shop/stacks/web/scale", alice, json={"replicas": 4})
    assert r.status_code == 403 and "instances limit 2" in r.json()["detail"]
    st = paas.ok("GET", "/apps/shop/stacks/web", alice)
    assert st["replicas"] == 2 and len(st["instances"]) == 2
    assert len(paas.ok("GET", "/instances", alice)) == 2


def test_a_hard_spread_beyond_the_hosts_is_refused_whole(paas):
    r = paas.stack(replicas=4, spread="hard")
    assert r.status_code == 409 and "anti-affinity" in r.json()["detail"]
    _nothing_made(paas)


def test_names_and_projects(paas):
    assert paas.call("POST", "/apps", json={"name": "shop"}).status_code == 409
    r = paas.call("POST", "/apps/nope/stacks", json={"name": "w", "image": "img",
                  "flavor": "small", "network": "net", "replicas": 1})  # fmt: skip
    assert r.status_code == 404 and "app 'nope' does not exist" in r.json()["detail"]
    assert paas.stack(replicas=1).status_code == 201
    assert paas.stack(replicas=1).status_code == 409  # the same stack again
    paas.ok("POST", "/projects", json={"name": "other"})
    eve = paas.ok("POST", "/users", json={"name": "eve", "project": "other"})["token"]
    assert paas.call("GET", "/apps/shop", eve).status_code == 404
    assert paas.call("DELETE", "/apps/shop/stacks/web", eve).status_code == 404
    reader = paas.ok("POST", "/users", json={"name": "rita", "project": "other",
                     "role": "reader"})["token"]  # fmt: skip
    r = paas.call("POST", "/apps", reader, json={"name": "mine"})
    assert r.status_code == 403 and "member role" in r.json()["detail"]


def test_bad_deploys_change_nothing(paas):
    assert paas.stack(replicas=1).status_code == 201
    # the create deploy is still running: its own 409
    r = paas.call("POST", "/apps/shop/stacks/web/deploys", json={})
    assert r.status_code == 409 and "create of shop/web" in r.json()["detail"]
    paas.settle()
    paas.step()
    for body, status, words in [
        ({"image": "nope"}, 404, "does not exist"),
        ({"files": [{"path": "/sys/x", "content": ""}]}, 422, "/sys; put the file in /etc"),
    ]:
        r = paas.call("POST", "/apps/shop/stacks/web/deploys", json=body)
        assert r.status_code == status and words in r.text
    assert paas.show()["deploy"]["kind"] == "create"
    assert len(paas.ok("GET", "/apps/shop/stacks/web/releases")) == 1


def test_an_admin_acting_on_a_projects_app_makes_that_projects_instances(paas):
    paas.ok("POST", "/projects", json={"name": "p1"})
    alice = paas.ok("POST", "/users", json={"name": "alice", "project": "p1"})["token"]
    paas.ok("POST", "/apps", alice, json={"name": "blog"})
    body = {"name": "web", "image": "img", "flavor": "small", "network": "net", "replicas": 1}
    assert paas.call("POST", "/apps/blog/stacks", json=body).status_code == 201
    (inst,) = paas.ok("GET", "/instances", alice)
    assert inst["name"] == "blog-web-1" and inst["project"] == "p1"
    assert paas.ok("GET", "/server-groups/blog-web", alice)["project"] == "p1"


def test_member_and_group_names_of_two_stacks_never_collide(paas):
    """App "a-b"'s stack "c" and app "a"'s stack "b-c" would both be a-b-c-N."""
    for app, stack in (("a-b", "c"), ("a", "b-c")):
        paas.ok("POST", "/apps", json={"name": app})
        body = {"name": stack, "image": "img", "flavor": "small", "network": "net", "replicas": 2}
        r = paas.call("POST", f"/apps/{app}/stacks", json=body)
        assert r.status_code == 201, r.text
    one = paas.ok("GET", "/apps/a-b/stacks/c")
    two = paas.ok("GET", "/apps/a/stacks/b-c")
    names = [m["name"] for m in one["instances"] + two["instances"]]
    assert sorted(names) == ["a-b-c-1", "a-b-c-2", "a-b-c-3", "a-b-c-4"]
    assert (one["group"], two["group"]) == ("a-b-c", "a-b-c-2")


def test_a_member_name_taken_by_another_instance_is_skipped(paas):
    assert paas.create("shop-web-2").status_code == 202  # a user's own instance
    assert paas.stack(replicas=2).status_code == 201
    assert [m["name"] for m in paas.show()["instances"]] == ["shop-web-1", "shop-web-3"]
    paas.settle()
    paas.step()
    paas.ok("POST", "/apps/shop/stacks/web/scale", json={"replicas": 3})
    assert [m["name"] for m in paas.show()["instances"]][-1] == "shop-web-4"


def test_numbers_that_would_make_a_name_too_long_are_reused(paas):
    """A stack whose name leaves room for three digits, its 1000th member: the lowest
    free number, never a ValueError for a 64-character name."""
    from dockyard.db import models as m

    app, stack = "x" * 29, "y" * 29
    paas.ok("POST", "/apps", json={"name": app})
    body = {"name": stack, "image": "img", "flavor": "small", "network": "net", "replicas": 1}
    assert paas.call("POST", f"/apps/{app}/stacks", json=body).status_code == 201
    (member,) = paas.ok("GET", f"/apps/{app}/stacks/{stack}")["instances"]
    paas.report(paas.ok("GET", f"/instances/{member['id']}"), power_state="running",
                task_done="spawning")  # fmt: skip
    with paas.client.app.state.db.session() as s:
        for row in s.query(m.Stack):
            row.next_ordinal = 1000
    paas.step()
    st = paas.ok("POST", f"/apps/{app}/stacks/{stack}/scale", json={"replicas": 2})
    assert [i["name"][-2:] for i in st["instances"]] == ["-1", "-2"]


def test_a_stacks_group_and_members_change_only_through_the_stack(paas):
    assert paas.stack(replicas=1).status_code == 201
    paas.settle()
    paas.step()
    (member,) = paas.show()["instances"]
    refused = [
        ("POST", f"/instances/{member['id']}/rebuild", {}, "dockyard stack deploy shop/web"),
        ("POST", f"/instances/{member['name']}/resize", {"flavor": "pinned"}, "another flavor"),
        ("DELETE", "/server-groups/shop-web", None, "dockyard stack delete shop/web"),
        ("POST", "/instances", {"name": "x", "image": "img", "flavor": "small",
                                "network": "net", "group": "shop-web"}, "stack scale shop/web"),
    ]  # fmt: skip
    for method, path, body, words in refused:
        r = paas.call(method, path, json=body)
        assert r.status_code == 409, (path, r.text)
        assert "managed by stack shop/web" in r.text and words in r.text, r.text
    assert paas.show()["instances"][0]["task_state"] is None  # nothing begun
    assert paas.call("POST", f"/instances/{member['id']}/reboot").status_code == 202
    paas.ok("POST", "/server-groups", json={"name": "mine", "policy": "anti-affinity"})
    assert paas.call("DELETE", "/server-groups/mine").status_code == 204  # others' as ever
