"""Self-healing of stacks at rest: an unhealthy member is restarted, then replaced; a
member on a down host is replaced elsewhere; the stack's events say so."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from dockyard.db import models as m
from tests.api import paas_helpers

paas = paas_helpers.paas  # the fixture


def _events(cloud):
    return " | ".join(e["message"] for e in cloud.show()["events"])


def _at_rest(cloud, replicas=2, **kw):
    assert cloud.stack(replicas=replicas, progress_deadline_s=10, **kw).status_code == 201
    cloud.settle()
    cloud.step()
    assert cloud.show()["deploy"]["status"] == "succeeded"


def test_an_unhealthy_member_is_restarted_twice_then_replaced(paas):
    _at_rest(paas)
    sick = paas.ok("GET", f"/instances/{paas.show()['instances'][0]['id']}")
    bad = {"status": "unhealthy", "failures": 3, "detail": "HTTP 503"}
    for restart in (1, 2):
        paas.report(sick, power_state="running", health=bad)
        paas.step(11)
        assert paas.ok("GET", f"/instances/{sick['id']}")["task_state"] == "rebooting"
        assert f"{sick['name']} unhealthy (HTTP 503): restarted ({restart} of 2)" in _events(paas)
        paas.step(1)  # a restart in flight is left alone
        paas.report(sick, power_state="running", task_done="rebooting", health=bad)
    paas.step(1)  # within the restart's time: nothing yet
    assert paas.ok("GET", f"/instances/{sick['id']}")["task_state"] is None
    paas.step(11)
    st = paas.show()
    assert "still unhealthy (HTTP 503) after 2 restarts: replaced" in _events(paas)
    names = {m["name"]: m["task_state"] for m in st["instances"]}
    assert names[sick["name"]] == "deleting" and names["shop-web-3"] == "spawning"
    paas.settle()
    paas.step()
    st = paas.show()
    assert [m["name"] for m in st["instances"]] == ["shop-web-2", "shop-web-3"]
    assert st["ready"] == 2


def test_a_member_deleted_by_hand_is_replaced(paas):
    _at_rest(paas)
    victim = paas.show()["instances"][1]
    paas.ok("DELETE", f"/instances/{victim['id']}")
    paas.step()
    st = paas.show()
    # the one being deleted is still listed until its agent removes it; its replacement too
    assert [m["name"] for m in st["instances"]][-1] == "shop-web-3"


def test_a_member_on_a_down_host_is_replaced_elsewhere(paas):
    _at_rest(paas)
    lost = paas.show()["instances"][0]
    alive = [h for h in paas_helpers.HOSTS if h != lost["host"]]
    db = paas.client.app.state.db
    with db.session() as s:  # its last heartbeat an hour ago: down, as the server reads it
        host = s.scalar(select(m.Host).where(m.Host.name == lost["host"]))
        host.last_heartbeat = m.now() - timedelta(hours=1)
    paas.step()
    st = paas.show()
    assert f"{lost['name']}'s host {lost['host']} is down: replaced elsewhere" in _events(paas)
    fresh = next(m for m in st["instances"] if m["name"] == "shop-web-3")
    assert fresh["host"] in alive
    assert next(m for m in st["instances"] if m["name"] == lost["name"])["task_state"] == "deleting"


def test_nothing_is_deleted_while_most_hosts_look_down(paas):
    """A server restarted after an outage (or cut off from its hosts) sees every host's
    heartbeat as old: its first pass must not delete every stack's members."""
    _at_rest(paas)
    before = {i["name"]: i["host"] for i in paas.show()["instances"]}
    db = paas.client.app.state.db
    with db.session() as s:
        for host in s.scalars(select(m.Host)):
            host.last_heartbeat = m.now() - timedelta(hours=1)
    paas.step()
    st = paas.show()
    assert {i["name"]: i["host"] for i in st["instances"]} == before
    assert {i["task_state"] for i in st["instances"]} == {None}
    assert "replaced" not in _events(paas)


def _spawn_fails(cloud, member):
    inst = cloud.ok("GET", f"/instances/{member['id']}")
    cloud.report(inst, power_state="nostate", task_done="spawning", error="no such image")


def test_a_member_in_error_is_replaced(paas):
    assert paas.stack(replicas=2, progress_deadline_s=10).status_code == 201
    bad, good = paas.show()["instances"]
    _spawn_fails(paas, bad)
    paas.settle()
    paas.step()
    paas.step(11)  # the create deploy ends (failed: one member never ready)
    paas.step()
    assert f"{bad['name']} is in ERROR (spawn on" in _events(paas)
    assert "replaced" in _events(paas)
    paas.settle()
    paas.step()
    st = paas.show()
    assert st["ready"] == 2 and bad["name"] not in [m["name"] for m in st["instances"]]


def test_a_stopped_member_is_started_again(paas):
    _at_rest(paas)
    victim = paas.show()["instances"][0]
    paas.ok("POST", f"/instances/{victim['id']}/stop")
    inst = paas.ok("GET", f"/instances/{victim['id']}")
    paas.report(inst, power_state="shutdown", task_done="powering-off")
    assert paas.ok("GET", f"/instances/{victim['id']}")["status"] == "SHUTOFF"
    paas.step()
    assert f"{victim['name']} was stopped (SHUTOFF): started (1 of 2)" in _events(paas)
    assert paas.ok("GET", f"/instances/{victim['id']}")["task_state"] == "powering-on"


def test_a_member_stuck_in_a_task_past_the_deadline_is_replaced(paas):
    _at_rest(paas)
    victim = paas.show()["instances"][0]
    paas.ok("POST", f"/instances/{victim['id']}/reboot")  # its agent never answers
    paas.step(5)
    assert paas.ok("GET", f"/instances/{victim['id']}")["task_state"] == "rebooting"
    paas.step(6)
    assert f"{victim['name']} stuck rebooting for more than 10 s: replaced" in _events(paas)
    assert paas.ok("GET", f"/instances/{victim['id']}")["task_state"] == "deleting"
    assert len(paas.show()["instances"]) == 3  # its replacement


def test_replacements_are_bounded_per_window_so_a_storm_does_not_churn_the_stack(paas):
    assert paas.stack(replicas=4, progress_deadline_s=10).status_code == 201
    first, second, *_ = paas.show()["instances"]
    _spawn_fails(paas, first)
    _spawn_fails(paas, second)
    paas.settle()
    paas.step()
    paas.step(11)  # the create deploy ends
    paas.step()
    names = {m["name"] for m in paas.show()["instances"]}
    assert len([n for n in (first["name"], second["name"]) if n in names]) == 1
    assert "not replaced, 1 of at most 1 replacements in 10 minutes" in _events(paas)
    paas.settle()  # the replacement runs
    paas.step(1)
    paas.step(1)  # said once a progress deadline, not on every pass
    assert _events(paas).count("not replaced") == 1
    paas.step(600)  # the window has passed
    names = {m["name"] for m in paas.show()["instances"]}
    assert first["name"] not in names and second["name"] not in names
