"""Apps, stacks, releases and deploys against the real API (SQLite, and PostgreSQL with
DOCKYARD_TEST_PG_URL); the test plays the hosts' agents and drives the deploy controller."""

from __future__ import annotations

from datetime import timedelta

from tests.api import paas_helpers

paas = paas_helpers.paas  # the fixture


def _ready(cloud, name="web"):
    return cloud.show(name)["ready"]


def test_a_stack_is_a_group_of_instances_carrying_its_release(paas):
    files = [{"path": "/etc/app.conf", "content": "x=1\n"}]
    r = paas.stack(env={"MODE": "prod"}, files=files, spread="hard")
    assert r.status_code == 201, r.text
    st = r.json()
    assert st["replicas"] == 3 and st["ready"] == 0 and st["current_release"] == 1
    assert st["group"] == "shop-web" and st["deploy"]["kind"] == "create"
    assert sorted(m["name"] for m in st["instances"]) == ["shop-web-1", "shop-web-2", "shop-web-3"]
    assert sorted(m["host"] for m in st["instances"]) == ["h1", "h2", "h3"]  # spread
    group = paas.ok("GET", "/server-groups/shop-web")
    assert group["policy"] == "anti-affinity" and len(group["members"]) == 3
    token = paas.agents["h1"]
    (d,) = paas.ok("GET", "/agent/hosts/h1/desired", token)["instances"]
    assert d["env"] == {"MODE": "prod"} and d["files"][0]["path"] == "/etc/app.conf"
    assert d["health_check"]["port"] == 8080
    paas.settle()
    paas.step()
    st = paas.show()
    assert st["ready"] == 3 and st["deploy"]["status"] == "succeeded"
    assert all(m["health"] == "healthy" and m["release"] == 1 for m in st["instances"])
    (rel,) = paas.ok("GET", "/apps/shop/stacks/web/releases")
    assert rel["number"] == 1 and rel["result"] == "deployed" and rel["image"] == "img"
    assert rel["files"] == ["/etc/app.conf"] and rel["created_by"] == "admin"
    assert paas.ok("GET", "/apps/shop")["stacks"] == ["web"]


def _running_stack(paas, **kw):
    assert paas.stack(**kw).status_code == 201
    paas.settle()
    paas.step()
    assert _ready(paas) == kw.get("replicas", 3)


def test_an_in_place_deploy_rebuilds_within_max_unavailable_keeping_ips(paas):
    _running_stack(paas, replicas=4, max_unavailable="2")
    before = {m["name"]: (m["ip"], m["host"]) for m in paas.show()["instances"]}
    d = paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    assert d["to_release"] == 2 and d["status"] == "running" and d["from_release"] == 1
    lowest = 4
    for _ in range(10):
        paas.step()
        st = paas.show()
        busy = [m for m in st["instances"] if m["task_state"] == "rebuilding"]
        assert len(busy) <= 2
        lowest = min(lowest, st["ready"])
        if st["deploy"]["status"] != "running":
            break
        paas.settle()
    assert lowest == 2  # replicas - max_unavailable, and never less
    st = paas.show()
    assert st["deploy"]["status"] == "succeeded" and st["current_release"] == 2
    assert {m["name"]: (m["ip"], m["host"]) for m in st["instances"]} == before
    assert all(m["release"] == 2 and m["ready"] for m in st["instances"])
    assert paas.ok("GET", f"/instances/{st['instances'][0]['id']}")["image"] == "img2"
    results = [r["result"] for r in paas.ok("GET", "/apps/shop/stacks/web/releases")]
    assert results == ["superseded", "deployed"]


def test_an_unhealthy_deploy_rolls_back_after_its_deadline_and_says_why(paas):
    _running_stack(paas, progress_deadline_s=5)
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"env": {"BROKEN": "1"}})
    paas.step()
    paas.settle(health="unhealthy")
    paas.step(1)
    st = paas.show()
    assert st["ready"] == 2 and st["deploy"]["status"] == "running"  # stuck at the budget
    paas.step(60)  # well past the deadline (the rollback's own deadline counts from here)
    st = paas.show()
    assert st["deploy"]["kind"] == "auto-rollback" and st["current_release"] == 1
    history = paas.ok("GET", "/apps/shop/stacks/web/releases")
    assert [r["result"] for r in history] == ["deploying", "rolled-back"]
    events = " | ".join(e["message"] for e in st["events"])
    assert "rolled back to release 1" in events and "not ready within 5 s" in events
    assert "unhealthy" in events
    for _ in range(3):
        paas.settle()
        paas.step()
    st = paas.show()
    assert st["ready"] == 3 and st["deploy"]["status"] == "succeeded"
    assert all(m["release"] == 1 for m in st["instances"])
    d = paas.ok("GET", "/apps/shop/stacks/web/deploys/" + st["deploy"]["id"])
    assert d["kind"] == "auto-rollback"
    history = paas.ok("GET", "/apps/shop/stacks/web/releases")
    assert [r["result"] for r in history] == ["deployed", "rolled-back"]


def test_a_second_deploy_while_one_runs_is_409_and_changes_nothing(paas):
    _running_stack(paas)
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    r = paas.call("POST", "/apps/shop/stacks/web/deploys", json={"env": {"A": "1"}})
    assert r.status_code == 409 and "is running" in r.json()["detail"]
    assert r.headers["content-type"] == "application/problem+json"
    assert len(paas.ok("GET", "/apps/shop/stacks/web/releases")) == 2
    r = paas.call("POST", "/apps/shop/stacks/web/scale", json={"replicas": 5})
    assert r.status_code == 409 and len(paas.show()["instances"]) == 3


def test_rollback_to_release_1_is_a_new_release(paas):
    _running_stack(paas)
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    for _ in range(6):
        paas.step()
        paas.settle()
    assert paas.show()["deploy"]["status"] == "succeeded"
    d = paas.ok("POST", "/apps/shop/stacks/web/rollback", json={"to": 1})
    assert d["kind"] == "rollback" and d["to_release"] == 3
    for _ in range(6):
        paas.step()
        paas.settle()
    st = paas.show()
    assert st["current_release"] == 3 and st["deploy"]["status"] == "succeeded"
    history = paas.ok("GET", "/apps/shop/stacks/web/releases")
    assert [(r["number"], r["image"]) for r in history] == [(1, "img"), (2, "img2"), (3, "img")]
    r = paas.call("POST", "/apps/shop/stacks/web/rollback", json={"to": 9})
    assert r.status_code == 404 and "no release 9" in r.json()["detail"]


def test_a_surge_deploy_adds_first_then_removes(paas):
    _running_stack(paas, strategy="surge", max_unavailable="0", max_surge="1")
    old = {m["name"] for m in paas.show()["instances"]}
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    for _ in range(20):
        paas.step()
        st = paas.show()
        assert st["ready"] >= 3 and len(st["instances"]) <= 4
        if st["deploy"]["status"] != "running":
            break
        paas.settle()
    st = paas.show()
    assert st["deploy"]["status"] == "succeeded" and len(st["instances"]) == 3
    assert not old & {m["name"] for m in st["instances"]}  # new instances replaced the old


def test_scale_up_and_down(paas):
    _running_stack(paas)
    st = paas.ok("POST", "/apps/shop/stacks/web/scale", json={"replicas": 5})
    assert st["replicas"] == 5 and len(st["instances"]) == 5
    assert all(m["release"] == 1 for m in st["instances"])
    paas.settle()
    st = paas.ok("POST", "/apps/shop/stacks/web/scale", json={"replicas": 2})
    leaving = [m for m in st["instances"] if m["task_state"] == "deleting"]
    assert [m["name"] for m in leaving] == ["shop-web-3", "shop-web-4", "shop-web-5"]
    paas.settle()
    assert [m["name"] for m in paas.show()["instances"]] == ["shop-web-1", "shop-web-2"]


def test_endpoints_list_ready_members_and_the_watch_answers_on_change(paas):
    _running_stack(paas)
    ep = paas.ok("GET", "/apps/shop/stacks/web/endpoints")
    assert ep["port"] == 8080 and len(ep["endpoints"]) == 3
    same = paas.ok("GET", f"/apps/shop/stacks/web/endpoints?version={ep['version']}&wait=0.2")
    assert same["version"] == ep["version"]
    victim = paas.ok("GET", f"/instances/{paas.show()['instances'][0]['id']}")
    paas.report(victim, power_state="running", health={"status": "unhealthy", "failures": 3})
    changed = paas.ok("GET", f"/apps/shop/stacks/web/endpoints?version={ep['version']}&wait=5")
    assert changed["version"] != ep["version"]
    assert victim["ip"] not in {e["ip"] for e in changed["endpoints"]}


def test_delete_stack_removes_its_instances_and_group_then_the_app_goes(paas):
    _running_stack(paas)
    paas.ok("POST", "/apps/shop/stacks/web/scale", json={"replicas": 2})
    paas.settle()  # one instance gone for good before the stack goes
    r = paas.call("DELETE", "/apps/shop")
    assert r.status_code == 409 and "still has stacks (web)" in r.json()["detail"]
    paas.ok("DELETE", "/apps/shop/stacks/web")
    assert paas.call("GET", "/apps/shop/stacks/web").status_code == 404
    assert paas.call("GET", "/server-groups/shop-web").status_code == 404
    servers = paas.ok("GET", "/instances")
    assert len(servers) == 2 and all(s["task_state"] == "deleting" for s in servers)
    paas.ok("DELETE", "/apps/shop")
    assert paas.ok("GET", "/apps") == []


def test_a_restarted_controller_resumes_and_a_repeated_pass_does_nothing_twice(paas):
    from dockyard.api.deploys import DeployController

    _running_stack(paas, replicas=3, max_unavailable="1")
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    paas.step()
    paas.step()  # the same pass again: still one member down
    rebuilding = [m for m in paas.show()["instances"] if m["task_state"] == "rebuilding"]
    assert len(rebuilding) == 1
    app = paas.client.app
    app.state.deploy_controller.stop()  # this server goes; another one takes over
    other = DeployController(app.state.db, app.state.watch, interval=None)
    paas.client.app.state.deploy_controller = other
    for _ in range(8):
        paas.settle()
        other.step(paas.clock)
    st = paas.show()
    assert st["deploy"]["status"] == "succeeded" and all(m["release"] == 2 for m in st["instances"])
    other.stop()


def test_one_server_at_a_time_drives_deploys(paas):
    from dockyard.api.deploys import DeployController

    db, watch = paas.client.app.state.db, paas.client.app.state.watch
    if db.engine.dialect.name != "postgresql":
        return  # one SQLite database serves one server: its lease is always held
    _running_stack(paas)
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    first = paas.client.app.state.deploy_controller  # it stepped: it holds the lease
    second = DeployController(db, watch, None)
    try:
        assert second.step(paas.clock) == []  # does nothing while the first holds it
        assert all(m["task_state"] is None for m in paas.show()["instances"])
        first.stop()  # the first server goes: its lease with it
        assert second.step(paas.clock)  # rebuilds one member, wakes its host
    finally:
        second.stop()


def test_a_deploy_whose_every_action_is_refused_rolls_back_at_its_deadline(paas):
    """A surge under hard spread with a member on every host: each pass's create is
    refused (no host left); refusals are no progress, so the deadline still comes."""
    assert paas.stack(spread="hard", strategy="surge", max_unavailable="0",
                      progress_deadline_s=5).status_code == 201  # fmt: skip
    paas.settle()
    paas.step()
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"env": {"A": "2"}})
    for _ in range(4):
        paas.step(2)  # a refused create every 2 s: 8 s past a 5 s deadline
    st = paas.show()
    assert st["deploy"]["kind"] == "auto-rollback", st["deploy"]
    assert "could not create" in " | ".join(e["message"] for e in st["events"])
    assert len(st["instances"]) == 3 and all(m["release"] == 1 for m in st["instances"])


def test_a_failed_rebuild_is_not_counted_as_the_new_release(paas):
    """The agent could not pull the new image: the member runs (and is recorded with)
    its old release, so the deploy cannot 'succeed' on the old image."""
    _running_stack(paas, progress_deadline_s=5)
    paas.ok("POST", "/images", json={"name": "img3", "source": "docker", "ref": "bb:3"})
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img3"})
    paas.step()
    for m in paas.show()["instances"]:
        inst = paas.ok("GET", f"/instances/{m['id']}")
        if inst["task_state"] == "rebuilding":
            failed = {"task_done": "rebuilding", "error": "pull failed: no such image"}
            paas.report(inst, power_state="running", health={"status": "healthy"}, **failed)
    st = paas.show()
    assert all(m["release"] == 1 for m in st["instances"]), st["instances"]
    assert all(paas.ok("GET", f"/instances/{m['id']}")["image"] == "img" for m in st["instances"])
    paas.step(60)
    assert paas.show()["deploy"]["kind"] == "auto-rollback"
    assert paas.ok("GET", "/apps/shop/stacks/web/releases")[-1]["result"] == "rolled-back"


def test_a_member_being_deleted_on_a_down_host_does_not_hold_a_deploy(paas):
    """It is gone as far as the stack is concerned: its delete ends when the host returns."""
    _running_stack(paas)
    lost = paas.show()["instances"][0]
    paas.host_down(lost["host"])
    paas.step()  # self-healing: deleted there (it waits for the host), replaced elsewhere
    paas.settle(down=[lost["host"]])
    paas.step()
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    for _ in range(8):
        paas.step()
        if paas.show()["deploy"]["status"] != "running":
            break
        paas.settle(down=[lost["host"]])
    st = paas.show()
    assert st["deploy"]["status"] == "succeeded", st["deploy"]
    gone = next(m for m in st["instances"] if m["name"] == lost["name"])
    assert gone["task_state"] == "deleting"  # still listed until its host returns


def test_no_automatic_rollback_to_a_release_that_never_ran(paas):
    """The stack's first release never got ready (its create failed): a deploy from it
    that fails too ends as failed, rather than "rolling back" to what never worked."""
    assert paas.stack(replicas=1, progress_deadline_s=5).status_code == 201
    paas.step()
    paas.settle(health="unhealthy")
    paas.step(6)
    assert paas.show()["deploy"]["status"] == "failed"
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    paas.step()
    paas.settle(health="unhealthy")
    paas.step()
    paas.step(6)
    st = paas.show()
    assert st["deploy"]["kind"] == "deploy" and st["deploy"]["status"] == "failed"
    assert "release 1 never ran, so there is nothing to roll back to" in st["deploy"]["reason"]
    results = [r["result"] for r in paas.ok("GET", "/apps/shop/stacks/web/releases")]
    assert results == ["failed", "failed"]


def test_a_member_in_error_is_replaced_by_a_deploy_not_rebuilt(paas):
    """Self-healing held it back (its bound spent): the deploy cannot rebuild it."""
    assert paas.stack(replicas=4, progress_deadline_s=30).status_code == 201
    for member in paas.show()["instances"][:2]:
        inst = paas.ok("GET", f"/instances/{member['id']}")
        paas.report(inst, power_state="nostate", task_done="spawning", error="no such image")
    paas.settle()
    paas.step()
    paas.step(31)  # the create deploy fails; healing replaces one, holds the other
    paas.settle()
    paas.step()
    assert sum(m["status"] == "ERROR" for m in paas.show()["instances"]) == 1
    paas.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    paas.clock -= timedelta(seconds=31)  # its deadline counts from the request's real time
    for _ in range(12):
        paas.step()
        if paas.show()["deploy"]["status"] != "running":
            break
        paas.settle()
    st = paas.show()
    assert st["deploy"]["status"] == "succeeded", (st["deploy"]["reason"], st["events"])
    assert "is in ERROR: replaced, not rebuilt" in " | ".join(e["message"] for e in st["events"])
