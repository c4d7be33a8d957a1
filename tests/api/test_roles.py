"""Roles are global (reader, member, admin) and their refusals name who can help."""

from __future__ import annotations

import pytest


def _user(cloud, name, role, project="p1"):
    if not any(p["name"] == project for p in cloud.ok("GET", "/projects")):
        cloud.ok("POST", "/projects", json={"name": project})
    body = {"name": name, "project": project, "role": role}
    return cloud.ok("POST", "/users", json=body)["token"]


def test_a_reader_is_told_to_ask_an_admin_for_the_member_role_and_can_get_it(cloud):
    cloud.catalog()
    cloud.register("h1")
    reader = _user(cloud, "rita", "reader")
    r = cloud.create("vm", token=reader)
    assert r.status_code == 403
    detail = r.json()["detail"]
    assert "project admin" not in detail
    assert "ask an admin" in detail and "dockyard user set-role rita member" in detail
    assert cloud.ok("GET", "/instances", reader) == []  # readers read
    cloud.ok("PATCH", "/users/rita", json={"role": "member"})
    assert cloud.create("vm", token=reader).status_code == 202
    cloud.ok("PATCH", "/users/rita", json={"role": "reader"})
    r = cloud.call("POST", "/instances/vm/stop", reader)
    assert r.status_code == 403 and "set-role rita member" in r.json()["detail"]


def test_an_admin_in_any_project_is_an_admin_of_every_project(cloud):
    cloud.catalog()
    cloud.register("h1")
    member = _user(cloud, "mia", "member", "p1")
    ops = _user(cloud, "ops", "admin", "p2")
    assert cloud.create("vm", token=member).status_code == 202
    assert [i["name"] for i in cloud.ok("GET", "/instances", ops)] == ["vm"]
    assert cloud.call("GET", "/instances", member).json()[0]["project"] == "p1"
    assert cloud.ok("GET", "/instances", _user(cloud, "other", "member", "p3")) == []


def test_members_cannot_do_admin_things(cloud):
    member = _user(cloud, "mia", "member")
    for method, path, body in (
        ("POST", "/projects", {"name": "x"}),
        ("POST", "/users", {"name": "x", "project": "p1"}),
        ("PATCH", "/users/mia", {"role": "admin"}),
        ("GET", "/hosts", None),
        ("POST", "/flavors", {"name": "f", "vcpus": 1, "memory_mb": 16}),
    ):
        r = cloud.call(method, path, member, json=body)
        assert r.status_code == 403 and "only admins" in r.json()["detail"], (path, r.text)


@pytest.mark.parametrize(
    ("method", "path", "words"),
    [
        ("POST", "/instances/vm/start", "readers cannot start instances"),
        ("POST", "/instances/vm/resize", "readers cannot resize instances"),
        ("DELETE", "/instances/vm", "readers cannot delete instances"),
        ("POST", "/volumes", "readers cannot create volumes"),
        ("DELETE", "/volumes/data", "readers cannot delete volumes"),
    ],
)
def test_every_change_a_reader_tries_is_refused_by_the_api_saying_what(cloud, method, path, words):
    cloud.catalog()
    cloud.register()
    reader = _user(cloud, "rita", "reader")
    assert cloud.create("vm").status_code == 202
    body = {"resize": {"flavor": "pinned"}, "volumes": {"name": "d", "size_mb": 16}}
    r = cloud.call(method, path, reader, json=body.get(path.rsplit("/", 1)[-1]))
    assert r.status_code == 403 and words in r.json()["detail"], r.text
    assert "set-role rita member" in r.json()["detail"]
