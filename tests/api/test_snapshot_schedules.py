"""Periodic snapshots (issue 11 item 4): an instance's schedule, the checker's orders
and pruning, driven with the checker's clock and fake agents' reports (what a real
agent sends for a snapshot: tests/lab/test_moves.py). The registry is faked at its
client's seam: ``Registry.delete`` records the manifests deleted."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from dockyard.api.app import create_app
from dockyard.api.registry import RegistrySettings
from dockyard.api.server import init
from dockyard.db.session import Database
from dockyard.images.registry import Registry
from tests.api.test_moves import DIGEST, REGISTRY, Moves, _member

HOUR = 3600
PROBLEM = "application/problem+json"


@pytest.fixture
def deleted(monkeypatch):
    """(repository, digest) of each manifest the server deletes from the registry."""
    calls: list[tuple[str, str]] = []

    def delete(self, repository, digest):
        assert self.url == REGISTRY
        calls.append((repository, digest))
        return True

    monkeypatch.setattr(Registry, "delete", delete)
    return calls


def _start(tmp_path, db=None, down_after=None, **kw):
    # the checker's own thread never ticks (every hour): the tests call check(now)
    db = db or Database(
        f"sqlite:///{tmp_path}/dockyard.db",
        **({"host_down_after": timedelta(seconds=down_after)} if down_after else {}),
    )
    token = init(db)
    registry = RegistrySettings(REGISTRY)
    app = create_app(db, tmp_path, registry=registry, migration_check_every=HOUR, **kw)
    client = TestClient(app)
    client.__enter__()
    cloud = Moves(client, token)
    cloud.catalog()
    cloud.agents = {h: cloud.register(h) for h in ("h1", "h2")}
    cloud.checker = app.state.move_checker
    return cloud


@pytest.fixture
def sched(tmp_path, backend_db):
    cloud = _start(tmp_path, db=backend_db)
    yield cloud
    cloud.client.__exit__(None, None, None)


def _later(hours: float) -> datetime:
    return datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=hours)


def _pass(cloud, hours):
    """One checker pass at now + ``hours``; the orders it placed, by instance id."""
    cloud.checker.check(now=_later(hours))
    orders = {}
    for host in cloud.agents:
        want, _ = cloud.desired(host)
        orders |= {i: d["snapshot"] for i, d in want.items() if d["snapshot"]}
    return orders


def _done(cloud, inst, order, n=0):
    digest = DIGEST[:-2] + f"{n:02x}"
    done = {"id": order["id"], "digest": digest, "layers": 3}
    r = cloud.report(inst["id"], inst["host"], power_state="running", snapshot=done)
    assert r.status_code == 204, r.text
    return digest


def _periodic(cloud, name):
    return sorted(
        (i for i in cloud.ok("GET", "/images") if i["name"].startswith(f"{name}-auto-")),
        key=lambda i: i["name"],
    )


def test_a_due_instance_gets_a_snapshot_order_named_by_the_time_and_show_says_when(sched):
    inst = sched.running("web", snapshot_every=6 * HOUR, snapshot_keep=2)
    shown = sched.ok("GET", "/instances/web")
    assert (shown["snapshot_every"], shown["snapshot_keep"]) == (6 * HOUR, 2)
    assert shown["last_snapshot_at"] is None
    assert _pass(sched, 5) == {}  # not due yet
    at = _later(6.1)
    sched.checker.check(now=at)
    order = sched.desired(inst["host"])[0][inst["id"]]["snapshot"]
    assert order["consistent"] is False  # a running instance is not stopped for it
    image = sched.ok("GET", f"/images/{order['id']}")
    assert image["name"] == f"web-auto-{at:%Y%m%d%H%M}" and image["status"] == "queued"
    server = sched.ok("GET", "/instances/web")
    assert server["task_state"] == "snapshotting"
    assert server["last_snapshot_at"].startswith(at.strftime("%Y-%m-%dT%H:%M"))
    _done(sched, inst, order)
    assert sched.ok("GET", f"/images/{order['id']}")["status"] == "active"
    assert _pass(sched, 7) == {}  # the period counts from the last one
    assert inst["id"] in _pass(sched, 12.2)
    log = sched.ok("GET", "/instances/web/actions")
    assert ("snapshot", "scheduler") in [(a["action"], a["user"]) for a in log]


def test_busy_unscheduled_and_stopped_instances(sched):
    sched.running("plain")  # no schedule
    busy = sched.running("busy", snapshot_every=HOUR)
    sched.ok("POST", "/instances/busy/snapshot", json={"image": "manual"})  # a task in flight
    off = sched.running("off", snapshot_every=HOUR)
    sched.ok("POST", "/instances/off/stop")
    sched.report(off["id"], off["host"], power_state="shutdown", task_done="powering-off")
    assert sched.ok("GET", "/instances/off")["status"] == "SHUTOFF"
    orders = _pass(sched, 2)
    assert _periodic(sched, "busy") == [] and _periodic(sched, "plain") == []
    assert orders[busy["id"]]["id"] == sched.ok("GET", "/images/manual")["id"]
    assert off["id"] in orders  # stopped, never snapshotted since: once
    _done(sched, off, orders[off["id"]])
    assert off["id"] not in _pass(sched, 10)  # its disk has not changed since
    sched.ok("POST", "/instances/off/start")
    sched.report(off["id"], off["host"], power_state="running", task_done="powering-on")
    assert off["id"] in _pass(sched, 20)


def test_the_newest_k_are_kept_and_older_ones_pruned_with_their_manifests(sched, deleted):
    inst = sched.running("web", snapshot_every=HOUR, snapshot_keep=2)
    sched.ok("POST", "/instances/web/snapshot", json={"image": "manual"})
    _done(sched, inst, sched.desired(inst["host"])[0][inst["id"]]["snapshot"], n=99)
    digests = []
    for n in range(4):
        order = _pass(sched, 1.5 * (n + 1))[inst["id"]]
        digests.append(_done(sched, inst, order, n))
    _pass(sched, 1.5 * 4 + 0.1)  # not due again yet; prunes what the 4th pushed out
    assert len(_periodic(sched, "web")) == 2
    kept = {i["digest"] for i in _periodic(sched, "web") if i["status"] == "active"}
    assert kept == set(digests[2:])
    assert sorted(d for _, d in deleted) == sorted(digests[:2])
    assert all(repo.startswith("dockyard/web-auto-") for repo, _ in deleted)
    assert sched.ok("GET", "/images/manual")["status"] == "active"  # never counted nor pruned
    log = [a["action"] for a in sched.ok("GET", "/instances/web/actions")]
    assert log.count("prune") == 2


def test_a_snapshot_an_instance_was_created_from_is_never_pruned(sched, deleted):
    inst = sched.running("web", snapshot_every=HOUR, snapshot_keep=1)
    first = _pass(sched, 1.5)[inst["id"]]
    _done(sched, inst, first, 0)
    name = sched.ok("GET", f"/images/{first['id']}")["name"]
    sched.running("copy", image=name)
    for n in (1, 2):
        _done(sched, inst, _pass(sched, 1.5 * (n + 1))[inst["id"]], n)
    _pass(sched, 10)
    left = {i["name"] for i in _periodic(sched, "web") if i["status"] == "active"}
    assert name in left and len(left) == 2  # the newest, and the one "copy" runs
    assert [d for _, d in deleted] == [DIGEST[:-2] + "01"]


def test_update_changes_the_schedule_members_yes_readers_no(sched):
    tok = _member(sched)
    sched.running("web", token=tok)
    r = sched.call("PATCH", "/instances/web", tok, json={"snapshot_every": 6 * HOUR})
    assert r.status_code == 200, r.text
    assert (r.json()["snapshot_every"], r.json()["snapshot_keep"]) == (6 * HOUR, 3)
    assert sched.ok("GET", "/instances/web", tok)["snapshot_every"] == 6 * HOUR  # committed
    r = sched.call("PATCH", "/instances/web", json={"snapshot_keep": 7})  # admin
    assert r.status_code == 200 and r.json()["snapshot_keep"] == 7
    reader = _member(sched, "rita", role="reader")
    r = sched.call("PATCH", "/instances/web", reader, json={"snapshot_every": None})
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM)
    other = sched.ok("POST", "/projects", json={"name": "p2"})
    assert other
    bob = sched.ok("POST", "/users", json={"name": "bob", "project": "p2", "role": "member"})
    r = sched.call("PATCH", "/instances/web", bob["token"], json={"snapshot_keep": 1})
    assert r.status_code == 404
    r = sched.call("PATCH", "/instances/web", tok, json={"snapshot_every": None})
    assert r.status_code == 200 and r.json()["snapshot_every"] is None
    assert _pass(sched, 48) == {}  # off: nothing ordered
    log = sched.ok("GET", "/instances/web/actions", tok)
    assert any(a["action"] == "update" for a in log)


@pytest.mark.parametrize(
    "body, says",
    [
        ({"snapshot_every": -1}, "greater than or equal to 60"),
        ({"snapshot_every": 10**12}, "less than or equal to"),
        ({"snapshot_every": "6 parsecs"}, "integer"),
        ({"snapshot_every": 600}, "give at least 15m"),  # under the server's floor
        ({"snapshot_keep": 0}, "greater than or equal to 1"),
        ({"snapshot_keep": 101}, "less than or equal to 100"),
        ({"snapshot_keep": None}, "cannot be null"),
        ({}, "nothing to change"),
        ({"snapshot_every": 3600, "color": "red"}, "Extra inputs"),
    ],
)
def test_bad_schedules_are_refused_saying_what_to_change(sched, body, says):
    sched.running("web")
    r = sched.call("PATCH", "/instances/web", json=body)
    assert r.status_code in (400, 422) and r.headers["content-type"].startswith(PROBLEM)
    assert says in r.text
    assert sched.ok("GET", "/instances/web")["snapshot_every"] is None


def test_create_takes_a_schedule_within_the_floor(sched):
    r = sched.create("web", snapshot_every=300)
    assert r.status_code == 422 and "give at least 15m" in r.json()["detail"]
    r = sched.create("web", snapshot_every=HOUR, snapshot_keep=200)
    assert r.status_code == 422
    assert sched.create("web", snapshot_every=900).status_code == 202


def test_a_lower_floor_lets_tests_ask_for_a_minute(tmp_path):
    cloud = _start(tmp_path, snapshot_min_every=60)
    try:
        assert cloud.create("web", snapshot_every=60).status_code == 202
    finally:
        cloud.client.__exit__(None, None, None)


def test_evacuation_rebuilds_from_the_newest_periodic_snapshot(tmp_path, deleted):
    cloud = _start(tmp_path, down_after=2.0)
    try:
        inst = cloud.running("web", snapshot_every=HOUR, snapshot_keep=2)
        cloud.ok("POST", "/instances/web/snapshot", json={"image": "old-manual"})
        _done(cloud, inst, cloud.desired(inst["host"])[0][inst["id"]]["snapshot"], 9)
        names = []
        for n in (0, 1):
            order = _pass(cloud, 1.5 * (n + 1))[inst["id"]]
            _done(cloud, inst, order, n)
            names.append(cloud.ok("GET", f"/images/{order['id']}")["name"])
        dead, alive = inst["host"], "h2" if inst["host"] == "h1" else "h1"
        time.sleep(2.1)
        cloud.ok("POST", f"/agent/hosts/{alive}/heartbeat", cloud.agents[alive])
        result = cloud.ok("POST", f"/hosts/{dead}/evacuate")
        assert [e["rebuilt_from"] for e in result["evacuations"]] == [names[1]]
        server = cloud.ok("GET", "/instances/web")
        assert (server["host"], server["image"]) == (alive, names[1])
    finally:
        cloud.client.__exit__(None, None, None)
