"""Server groups through the API: per-project CRUD, roles, bad input, and placement
over several hosts registered through the agent API (placed = the instance has a host)."""

from __future__ import annotations

import pytest

PROBLEM = "application/problem+json"


def _user(cloud, name, role, project="p1"):
    if not any(p["name"] == project for p in cloud.ok("GET", "/projects")):
        cloud.ok("POST", "/projects", json={"name": project})
    return cloud.ok("POST", "/users", json={"name": name, "project": project, "role": role})[
        "token"
    ]


def _hosts(cloud, *names, **kw):
    return {name: cloud.register(name, **kw) for name in names}


def _group(cloud, name, policy, token=None):
    return cloud.call("POST", "/server-groups", token, json={"name": name, "policy": policy})


def _delete_for_good(cloud, inst, agent_tokens, token=None):
    """Delete ``inst`` and have its host's agent report it gone."""
    agent = agent_tokens[inst["host"]]
    path = f"/agent/instances/{inst['id']}/state"
    cloud.ok("PUT", path, agent, json={"power_state": "running", "task_done": "spawning"})
    cloud.ok("DELETE", f"/instances/{inst['id']}", token)
    cloud.ok("PUT", path, agent, json={"power_state": "nostate", "gone": True})


def test_anti_affinity_puts_each_member_on_its_own_host_then_refuses_naming_the_filter(cloud):
    cloud.catalog()
    _hosts(cloud, "h1", "h2", "h3")
    assert _group(cloud, "web", "anti-affinity").status_code == 201
    placed = [cloud.create(f"web{i}", group="web") for i in range(3)]
    assert [r.status_code for r in placed] == [202] * 3
    assert sorted(r.json()["host"] for r in placed) == ["h1", "h2", "h3"]
    assert {r.json()["group"] for r in placed} == {"web"}
    r = cloud.create("web3", group="web")
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    body = r.json()
    assert "anti-affinity: 3 hosts already hold a member of web" in body["detail"]
    assert body["rejected"] == {"ServerGroupAntiAffinityFilter": 3}
    assert "ServerGroupAntiAffinityFilter" in body["reasons"]
    # outside the group the same hosts still take instances
    assert cloud.create("loner").status_code == 202
    shown = cloud.ok("GET", "/server-groups/web")
    assert shown["members"] == ["web0", "web1", "web2"]
    assert sorted(shown["hosts"]) == ["h1", "h2", "h3"]


def test_affinity_keeps_members_together_and_refuses_when_their_host_is_full(cloud):
    cloud.catalog()
    _hosts(cloud, "h1", "h2", memory_mb=512)
    _group(cloud, "db", "affinity")
    hosts = [cloud.create(f"db{i}", group="db").json()["host"] for i in range(4)]
    assert len(set(hosts)) == 1  # 4 x 128 MB: the host is now full
    r = cloud.create("db4", group="db")
    assert r.status_code == 409
    assert f"affinity: the members of db run on {hosts[0]}, and only there" in r.json()["detail"]
    assert cloud.create("other").json()["host"] != hosts[0]  # there was room elsewhere


def test_soft_policies_prefer_but_never_refuse(cloud):
    cloud.catalog()
    _hosts(cloud, "h1", "h2", "h3")
    _group(cloud, "spread", "soft-anti-affinity")
    _group(cloud, "pack", "soft-affinity")
    spread = [cloud.create(f"s{i}", group="spread").json()["host"] for i in range(4)]
    assert len(set(spread[:3])) == 3 and spread[3] in spread[:3]
    pack = [cloud.create(f"p{i}", group="pack").json()["host"] for i in range(4)]
    assert len(set(pack)) == 1


def test_the_az_filter_works_across_hosts_with_a_group(cloud):
    cloud.catalog()
    cloud.register("a1", availability_zone="az1")
    cloud.register("a2", availability_zone="az1")
    cloud.register("b1", availability_zone="az2")
    _group(cloud, "web", "anti-affinity")
    az1 = [cloud.create(f"w{i}", group="web", availability_zone="az1").json() for i in range(2)]
    assert sorted(i["host"] for i in az1) == ["a1", "a2"]
    assert {i["availability_zone"] for i in az1} == {"az1"}
    r = cloud.create("w2", group="web", availability_zone="az1")
    assert r.status_code == 409
    assert r.json()["rejected"] == {
        "AvailabilityZoneFilter": 1,
        "ServerGroupAntiAffinityFilter": 2,
    }
    assert cloud.create("w3", group="web", availability_zone="az2").json()["host"] == "b1"


def test_a_group_with_members_cannot_be_deleted_and_says_which(cloud):
    cloud.catalog()
    agents = _hosts(cloud, "h1", "h2")
    _group(cloud, "web", "anti-affinity")
    a = cloud.create("a", group="web").json()
    b = cloud.create("b", group="web").json()
    r = cloud.call("DELETE", "/server-groups/web")
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    assert r.json()["members"] == ["a", "b"] and "a, b" in r.json()["detail"]
    _delete_for_good(cloud, a, agents)
    assert cloud.ok("GET", "/server-groups/web")["members"] == ["b"]
    # a's host is free of members again: a new member may go there
    assert cloud.create("c", group="web").json()["host"] == a["host"]
    for inst in (b, cloud.ok("GET", "/instances/c")):
        _delete_for_good(cloud, inst, agents)
    assert cloud.call("DELETE", "/server-groups/web").status_code == 204
    assert cloud.call("GET", "/server-groups/web").status_code == 404
    assert _group(cloud, "web", "affinity").status_code == 201  # the name is free again


def test_groups_are_per_project_and_admins_see_all(cloud):
    cloud.catalog()
    _hosts(cloud, "h1")
    mia = _user(cloud, "mia", "member", "p1")
    rita = _user(cloud, "rita", "reader", "p1")
    otto = _user(cloud, "otto", "member", "p2")
    assert _group(cloud, "web", "anti-affinity", mia).status_code == 201
    assert _group(cloud, "web", "affinity", otto).status_code == 201  # names are per project
    r = _group(cloud, "web", "affinity", mia)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    assert [g["project"] for g in cloud.ok("GET", "/server-groups", rita)] == ["p1"]
    assert cloud.ok("GET", "/server-groups/web", rita)["policy"] == "anti-affinity"
    assert sorted(g["project"] for g in cloud.ok("GET", "/server-groups")) == ["p1", "p2"]
    # a reader reads but may not change
    r = _group(cloud, "db", "affinity", rita)
    assert r.status_code == 403 and "readers cannot create server groups" in r.json()["detail"]
    r = cloud.call("DELETE", "/server-groups/web", rita)
    assert r.status_code == 403 and "readers cannot delete server groups" in r.json()["detail"]
    # another project's group is not found, to see, delete or join
    p1_id = cloud.ok("GET", "/server-groups/web", mia)["id"]
    assert cloud.call("GET", f"/server-groups/{p1_id}", otto).status_code == 404
    assert cloud.call("DELETE", f"/server-groups/{p1_id}", otto).status_code == 404
    r = cloud.create("vm", token=otto, group=p1_id)
    assert r.status_code == 404 and "does not exist in this project" in r.json()["detail"]
    assert cloud.create("vm", token=mia, group=p1_id).json()["group"] == "web"


def test_joining_a_group_that_does_not_exist_says_how_to_make_it(cloud):
    cloud.catalog()
    _hosts(cloud, "h1")
    r = cloud.create("vm", group="nope")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert "dockyard server-group create nope --policy" in r.json()["detail"]
    assert cloud.ok("GET", "/instances") == []


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": "web", "policy": "sideways"}, "policy"),
        ({"name": "web"}, "policy"),
        ({"name": "x" * 64, "policy": "affinity"}, "name"),
        ({"name": "-web", "policy": "affinity"}, "name"),
        ({"name": "web", "policy": "affinity", "extra": 1}, "extra"),
    ],
)
def test_bad_group_input_is_422_naming_the_field(cloud, body, field):
    r = cloud.call("POST", "/server-groups", json=body)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert field in r.text
    assert cloud.ok("GET", "/server-groups") == []


def test_an_overlong_group_on_create_is_422(cloud):
    cloud.catalog()
    r = cloud.create("vm", group="g" * 64)
    assert r.status_code == 422 and "group" in r.text
