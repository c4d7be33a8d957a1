"""Periodic snapshots are held to the project's ``snapshots`` quota (issue 11 item 4's
schedules, db/schedules.py ``fit``): a due snapshot that would exceed it prunes the
instance's own older periodic snapshots to fit, never its newest, and when that is
not enough it is skipped with why in the action log, said once."""

from __future__ import annotations

from tests.api.test_snapshot_schedules import (  # noqa: F401
    HOUR,
    _done,
    _pass,
    _periodic,
    deleted,
    sched,
)


def _quota(cloud, n):
    project = cloud.ok("GET", "/quota")["project"]
    cloud.ok("PATCH", f"/projects/{project}/quota", json={"snapshots": n})
    return project


def _used(cloud):
    return cloud.ok("GET", "/quota")["resources"]["snapshots"]["used"]


def _actions(cloud, name, action):
    return [a for a in cloud.ok("GET", f"/instances/{name}/actions") if a["action"] == action]


def test_a_due_snapshot_prunes_the_instances_oldest_to_fit_the_quota(sched, deleted):  # noqa: F811
    _quota(sched, 3)
    inst = sched.running("web", snapshot_every=HOUR, snapshot_keep=5)
    sched.ok("POST", "/instances/web/snapshot", json={"image": "manual"})
    _done(sched, inst, sched.desired(inst["host"])[0][inst["id"]]["snapshot"], n=99)
    digests = [_done(sched, inst, _pass(sched, 1.5 * (n + 1))[inst["id"]], n) for n in (0, 1)]
    assert _used(sched) == 3  # the manual one and two periodic: full

    order = _pass(sched, 4.5)[inst["id"]]  # due again: the oldest periodic one makes room
    assert _used(sched) == 3
    assert [d for _, d in deleted] == [digests[0]]
    names = [i["name"] for i in _periodic(sched, "web")]
    assert len(names) == 2 and sched.ok("GET", f"/images/{order['id']}")["name"] in names
    assert sched.ok("GET", "/images/manual")["status"] == "active"  # not the schedule's
    [pruned] = _actions(sched, "web", "prune")
    assert "to fit the snapshots quota of 3" in pruned["message"]


def test_without_room_the_snapshot_is_skipped_and_the_log_says_why_once(sched, deleted):  # noqa: F811
    project = _quota(sched, 1)
    inst = sched.running("web", snapshot_every=HOUR, snapshot_keep=3)
    first = _pass(sched, 1.5)[inst["id"]]  # room for one
    _done(sched, inst, first, 0)
    assert _pass(sched, 3) == {}  # the only one is its newest: never pruned to fit
    assert _pass(sched, 3.1) == {}
    [skipped] = _actions(sched, "web", "snapshot-skipped")  # said once, not every pass
    assert skipped["result"] == "error" and skipped["user"] == "scheduler"
    assert f"project {project}'s snapshots quota is 1 and 1 are in use" in skipped["message"]
    assert f"dockyard quota set {project} --snapshots N" in skipped["message"]
    assert deleted == [] and [i["id"] for i in _periodic(sched, "web")] == [first["id"]]

    r = sched.call("POST", "/instances/web/snapshot", json={"image": "manual"})
    assert r.status_code == 403  # a manual one meets the same quota
    _quota(sched, 3)
    assert inst["id"] in _pass(sched, 3.2)  # room now: taken on the next pass


def test_a_manual_snapshot_filling_the_quota_is_not_pruned_by_a_schedule(sched, deleted):  # noqa: F811
    _quota(sched, 1)
    inst = sched.running("web", snapshot_every=HOUR)
    sched.ok("POST", "/instances/web/snapshot", json={"image": "manual"})
    _done(sched, inst, sched.desired(inst["host"])[0][inst["id"]]["snapshot"], n=99)
    assert _pass(sched, 1.5) == {}
    assert len(_actions(sched, "web", "snapshot-skipped")) == 1
    assert sched.ok("GET", "/images/manual")["status"] == "active" and deleted == []
