"""Snapshots, cold migrations and drains through the API, with the agents' side played
by reports on the agent API (what a real agent sends: tests/lab/test_moves.py)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from dockyard.api.app import create_app
from dockyard.api.registry import RegistrySettings
from dockyard.api.server import init
from dockyard.db.session import Database
from tests.api.conftest import Cloud

PROBLEM = "application/problem+json"
REGISTRY = "https://198.18.0.2:5000"
DIGEST = "sha256:" + "ab" * 32


class Moves(Cloud):
    agents: dict[str, str]

    def report(self, inst_id, host, **body):
        return self.call("PUT", f"/agent/instances/{inst_id}/state", self.agents[host], json=body)

    def desired(self, host):
        state = self.ok("GET", f"/agent/hosts/{host}/desired", self.agents[host])
        return {i["id"]: i for i in state["instances"]}, state

    def running(self, name, **kw):
        r = self.create(name, **kw)
        assert r.status_code == 202, r.text
        inst = r.json()
        self.report(inst["id"], inst["host"], power_state="running", task_done="spawning")
        return self.ok("GET", f"/instances/{name}")

    def migration(self, mig_id):
        return self.ok("GET", f"/migrations/{mig_id}")


def _cloud(tmp_path, timeout=120.0, every=2.0, down_after=None, db=None):
    db = db or Database(
        f"sqlite:///{tmp_path}/dockyard.db",
        **({"host_down_after": down_after} if down_after else {}),
    )
    token = init(db)
    app = create_app(
        db,
        tmp_path,
        registry=RegistrySettings(REGISTRY),
        migration_timeout=timeout,
        migration_check_every=every,
    )
    return db, app, token


@pytest.fixture
def moves(tmp_path, backend_db):
    """Two hosts in one zone on SQLite and (with DOCKYARD_TEST_PG_URL) PostgreSQL."""
    _, app, token = _cloud(tmp_path, db=backend_db)
    with TestClient(app) as client:
        cloud = Moves(client, token)
        cloud.catalog()
        cloud.agents = {h: cloud.register(h) for h in ("h1", "h2")}
        yield cloud


def _member(cloud, name="alice", role="member"):
    if not any(p["name"] == "p1" for p in cloud.ok("GET", "/projects")):
        cloud.ok("POST", "/projects", json={"name": "p1"})
    return cloud.ok("POST", "/users", json={"name": name, "project": "p1", "role": role})["token"]


def _other(host):
    return "h2" if host == "h1" else "h1"


def _snapshot_done(cloud, inst, mig_id, host, **extra):
    done = {"id": mig_id, "digest": DIGEST, "layers": 3, "size": 1000, **extra}
    done.setdefault("seconds", {"stop": 0.5, "commit": 1.0, "push": 2.0})
    r = cloud.report(inst["id"], host, power_state="shutdown", snapshot=done)
    assert r.status_code == 204, r.text


# --- snapshots


def test_a_snapshot_becomes_an_active_image_with_its_digest_that_new_instances_use(moves):
    tok = _member(moves)
    inst = moves.running("web", token=tok)
    r = moves.call("POST", "/instances/web/snapshot", tok, json={"image": "web-snap"})
    assert r.status_code == 202, r.text
    image = r.json()
    assert image["status"] == "queued" and image["name"] == "web-snap"
    assert moves.ok("GET", "/instances/web")["task_state"] == "snapshotting"
    want, _ = moves.desired(inst["host"])
    order = want[inst["id"]]["snapshot"]
    assert order["id"] == image["id"] and order["consistent"] is False
    assert order["push_ref"] == f"198.18.0.2:5000/dockyard/web-snap:{image['id'][:8]}"
    assert want[inst["id"]]["power"] == "running"  # committed as it runs
    done = {"id": image["id"], "digest": DIGEST, "layers": 4}
    r = moves.report(inst["id"], inst["host"], power_state="running", snapshot=done)
    assert r.status_code == 204
    after = moves.ok("GET", "/images/web-snap")
    assert (after["status"], after["digest"], after["registry_url"]) == ("active", DIGEST, REGISTRY)
    server = moves.ok("GET", "/instances/web")
    assert server["task_state"] is None and server["status"] == "ACTIVE" and not server["fault"]
    want, _ = moves.desired(inst["host"])
    assert want[inst["id"]]["snapshot"] is None
    # a new instance of the snapshot, on the other host, pulls it by digest
    copy = moves.create("copy", image="web-snap", availability_zone="nova").json()
    pulls = moves.desired(copy["host"])[0][copy["id"]]["image_pulls"]
    assert pulls == [f"198.18.0.2:5000/dockyard/web-snap@{DIGEST}"]
    log = moves.ok("GET", "/instances/web/actions")
    assert [(a["action"], a["result"]) for a in log][-1] == ("snapshot", "success")


def test_a_failed_snapshot_marks_the_image_error_and_leaves_the_instance_running(moves):
    inst = moves.running("web")
    image = moves.ok("POST", "/instances/web/snapshot", json={"image": "s1", "consistent": True})
    order = moves.desired(inst["host"])[0][inst["id"]]["snapshot"]
    assert order["consistent"] is True
    r = moves.report(
        inst["id"], inst["host"], power_state="running", task_done="snapshotting", error="push: 500"
    )
    assert r.status_code == 204
    assert moves.ok("GET", f"/images/{image['id']}")["status"] == "error"
    server = moves.ok("GET", "/instances/web")
    assert server["status"] == "ACTIVE" and server["task_state"] is None
    assert "snapshot failed: push: 500" in server["fault"]


def test_a_snapshot_whose_image_was_deleted_meanwhile_still_ends_its_task(moves):
    inst = moves.running("web")
    image = moves.ok("POST", "/instances/web/snapshot", json={"image": "gone"})
    moves.ok("DELETE", "/images/gone")
    done = {"id": image["id"], "digest": DIGEST, "layers": 4}
    moves.report(inst["id"], inst["host"], power_state="running", snapshot=done)
    server = moves.ok("GET", "/instances/web")
    assert server["task_state"] is None and "image was deleted" in server["fault"]


def test_snapshot_refusals_name_what_to_change(moves, tmp_path):
    moves.running("web")
    r = moves.call("POST", "/instances/web/snapshot", json={"image": "img"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    reader = _member(moves, "rita", role="reader")
    r = moves.call("POST", "/instances/web/snapshot", reader, json={"image": "x"})
    assert r.status_code in (403, 404)
    moves.ok("POST", "/instances/web/snapshot", json={"image": "x"})
    r = moves.call("POST", "/instances/web/snapshot", json={"image": "y"})
    assert r.status_code == 409 and "snapshotting" in r.json()["detail"]


# --- cold migration


def test_a_cold_migration_moves_the_instance_with_its_identity_and_records_the_downtime(moves):
    inst = moves.running("web")
    source, target = inst["host"], _other(inst["host"])
    r = moves.call("POST", "/instances/web/migrate", json={})
    assert r.status_code == 202, r.text
    mig = r.json()
    assert (mig["status"], mig["source"], mig["target"]) == ("snapshotting", source, target)
    assert mig["instance"] == {"id": inst["id"], "name": "web"}
    server = moves.ok("GET", "/instances/web")
    assert server["task_state"] == "migrating" and server["host"] == source
    want = moves.desired(source)[0][inst["id"]]
    assert want["power"] == "stopped"
    order = want["snapshot"]
    assert order["id"] == mig["id"] and order["consistent"] and order["volumes"]
    assert inst["id"] not in moves.desired(target)[0]

    _snapshot_done(moves, inst, mig["id"], source)
    moved = moves.migration(mig["id"])
    assert moved["status"] == "starting" and moved["snapshot_digest"] == DIGEST
    assert moves.ok("GET", "/instances/web")["host"] == target
    on_target = moves.desired(target)[0][inst["id"]]
    assert on_target["power"] == "running"
    assert any(DIGEST in p for p in on_target["image_pulls"])
    held = moves.desired(source)[0][inst["id"]]
    assert held["power"] == "stopped" and held["snapshot"] is None

    r = moves.report(inst["id"], target, power_state="running", task_done="migrating")
    assert r.status_code == 204
    done = moves.migration(mig["id"])
    assert done["status"] == "finished" and done["source_state"] == "removed"
    assert done["downtime_s"] >= 3.0 and done["finished_at"]
    assert set(done["seconds"]) >= {"stop", "commit", "push", "start"}
    after = moves.ok("GET", "/instances/web")
    assert (after["status"], after["task_state"], after["host"]) == ("ACTIVE", None, target)
    same = ("id", "ip", "mac", "hostname", "name")
    assert {k: after[k] for k in same} == {k: inst[k] for k in same}
    assert inst["id"] not in moves.desired(source)[0]
    listed = moves.ok("GET", "/migrations", params={"instance": "web"})
    assert [m["id"] for m in listed] == [mig["id"]]
    log = moves.ok("GET", "/instances/web/actions")
    assert [(a["action"], a["result"]) for a in log][-1] == ("migrate", "success")


def test_a_target_that_fails_to_start_it_hands_the_instance_back_to_the_source(moves):
    inst = moves.running("web", flavor="pinned")
    source, target = inst["host"], _other(inst["host"])
    mig = moves.ok("POST", "/instances/web/migrate", json={"host": target})
    assert moves.ok("GET", f"/hosts/{target}")["pinned_cores"]  # the target's core claimed
    _snapshot_done(moves, inst, mig["id"], source)
    r = moves.report(
        inst["id"], target, power_state="nostate", task_done="migrating", error="pull: denied"
    )
    assert r.status_code == 204
    failed = moves.migration(mig["id"])
    assert failed["status"] == "error" and "pull: denied" in failed["reason"]
    back = moves.ok("GET", "/instances/web")
    assert (back["host"], back["status"], back["task_state"]) == (source, "ACTIVE", None)
    assert "pull: denied" in back["fault"]
    assert moves.desired(source)[0][inst["id"]]["power"] == "running"
    assert inst["id"] not in moves.desired(target)[0]
    assert moves.ok("GET", f"/hosts/{target}")["pinned_cores"] == {}
    assert moves.ok("GET", f"/hosts/{source}")["pinned_cores"]
    log = moves.ok("GET", "/instances/web/actions")[-1]
    assert log["action"] == "migrate" and log["result"] == "error"
    assert "pull: denied" in log["message"]


def test_a_failed_snapshot_leaves_the_instance_running_on_the_source(moves):
    inst = moves.running("web")
    mig = moves.ok("POST", "/instances/web/migrate", json={})
    r = moves.report(
        inst["id"], inst["host"], power_state="shutdown", task_done="migrating", error="disk full"
    )
    assert r.status_code == 204
    assert moves.migration(mig["id"])["status"] == "error"
    back = moves.ok("GET", "/instances/web")
    assert back["host"] == inst["host"] and back["task_state"] is None
    assert moves.desired(inst["host"])[0][inst["id"]]["power"] == "running"
    names = [i["name"] for i in moves.ok("GET", "/images")]
    assert not [n for n in names if "migration" in n]  # the queued snapshot went


def test_live_migration_is_refused_with_501_saying_why(moves):
    moves.running("web")
    r = moves.call("POST", "/instances/web/migrate", json={"live": True})
    assert r.status_code == 501 and r.headers["content-type"] == PROBLEM
    assert "vdso: Failed to fill self vdso symtable" in r.json()["detail"]
    assert moves.ok("GET", "/instances/web")["task_state"] is None


def test_migration_refusals(moves):
    inst = moves.running("web")
    r = moves.call("POST", "/instances/web/migrate", json={"host": "nowhere"})
    assert r.status_code == 404 and "dockyard host list" in r.json()["detail"]
    r = moves.call("POST", "/instances/web/migrate", json={"host": inst["host"]})
    assert r.status_code == 409 and "already runs on" in r.json()["detail"]
    tok = _member(moves)
    r = moves.call("POST", "/instances/web/migrate", tok, json={})
    assert r.status_code == 403
    moves.ok("POST", "/instances/web/stop")
    r = moves.call("POST", "/instances/web/migrate", json={})
    assert r.status_code == 409 and "only an ACTIVE instance" in r.json()["detail"]
    assert moves.ok("GET", "/migrations") == []


def test_no_room_anywhere_is_a_409_with_each_filters_reasons(moves):
    big = {"name": "big", "vcpus": 1, "memory_mb": 6000}
    moves.ok("POST", "/flavors", json=big)
    first = moves.running("a", flavor="big")
    moves.running("b", flavor="big")  # the other host is as full now
    r = moves.call("POST", f"/instances/{first['name']}/migrate", json={})
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    body = r.json()
    assert "RamFilter" in body["reasons"] and "cannot migrate a" in body["detail"]
    assert moves.ok("GET", "/instances/a")["task_state"] is None


def test_the_scheduler_counts_a_moving_instance_on_both_hosts(moves):
    big = {"name": "big", "vcpus": 1, "memory_mb": 5000}
    moves.ok("POST", "/flavors", json=big)
    inst = moves.running("a", flavor="big")
    target = _other(inst["host"])
    mig = moves.ok("POST", "/instances/a/migrate", json={})
    assert moves.ok("GET", f"/hosts/{target}")["memory_mb_used"] == 5000
    r = moves.create("b", flavor="big")  # the target's room is claimed, the source's held
    assert r.status_code == 409
    _snapshot_done(moves, inst, mig["id"], inst["host"])
    assert moves.ok("GET", f"/hosts/{inst['host']}")["memory_mb_used"] == 5000  # held
    assert moves.create("b", flavor="big").status_code == 409
    moves.report(inst["id"], target, power_state="running", task_done="migrating")
    assert moves.ok("GET", f"/hosts/{inst['host']}")["memory_mb_used"] == 0
    assert moves.create("b", flavor="big").status_code == 202


def test_two_migrates_of_one_instance_at_once_one_wins(tmp_path, backend_db):
    _, app, token = _cloud(tmp_path, db=backend_db)
    with TestClient(app) as client:
        moves = Moves(client, token)
        moves.catalog()
        moves.agents = {h: moves.register(h) for h in ("h1", "h2")}
        _race(moves)


def _race(moves):
    moves.running("web")
    answers: list[int] = []

    def go():
        answers.append(moves.call("POST", "/instances/web/migrate", json={}).status_code)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [202, 409]
    assert len(moves.ok("GET", "/migrations", params={"instance": "web"})) == 1


def test_a_migration_past_its_deadline_is_rolled_back_by_the_checker(tmp_path):
    # 3 s: long enough that a slow CI machine still reads "starting" right after the
    # snapshot's report (1 s was not, once), short enough to wait for
    db, app, token = _cloud(tmp_path, timeout=3.0, every=0.1)
    with TestClient(app) as client:
        cloud = Moves(client, token)
        cloud.catalog()
        cloud.agents = {h: cloud.register(h) for h in ("h1", "h2")}
        inst = cloud.running("web")
        mig = cloud.ok("POST", "/instances/web/migrate", json={})
        _snapshot_done(cloud, inst, mig["id"], inst["host"], seconds={})
        assert cloud.migration(mig["id"])["status"] == "starting"
        deadline = time.monotonic() + 15
        while cloud.migration(mig["id"])["status"] == "starting":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        failed = cloud.migration(mig["id"])
        assert failed["status"] == "error" and "no progress within 3 s" in failed["reason"]
        back = cloud.ok("GET", "/instances/web")
        assert back["host"] == inst["host"] and back["task_state"] is None
        assert inst["id"] not in cloud.desired(_other(inst["host"]))[0]
        # the target's late report changes nothing
        cloud.report(inst["id"], _other(inst["host"]), power_state="running")
        assert cloud.ok("GET", "/instances/web")["host"] == inst["host"]
    db.engine.dispose()


def test_a_target_host_that_goes_down_mid_move_gets_nothing_and_the_source_runs_it(tmp_path):
    db, app, token = _cloud(tmp_path, every=0.1, down_after=timedelta(seconds=1.5))
    with TestClient(app) as client:
        cloud = Moves(client, token)
        cloud.catalog()
        cloud.agents = {h: cloud.register(h) for h in ("h1", "h2")}
        inst = cloud.running("web")
        source, target = inst["host"], _other(inst["host"])
        mig = cloud.ok("POST", "/instances/web/migrate", json={})
        _snapshot_done(cloud, inst, mig["id"], source)
        deadline = time.monotonic() + 10
        while cloud.migration(mig["id"])["status"] == "starting":  # only the source beats
            cloud.ok("POST", f"/agent/hosts/{source}/heartbeat", cloud.agents[source])
            assert time.monotonic() < deadline
            time.sleep(0.1)
        failed = cloud.migration(mig["id"])
        assert failed["status"] == "error" and f"target host {target} is down" in failed["reason"]
        back = cloud.ok("GET", "/instances/web")
        assert back["host"] == source and back["task_state"] is None
        assert cloud.desired(source)[0][inst["id"]]["power"] == "running"
        assert inst["id"] not in cloud.desired(target)[0]  # its agent removes what it made
    db.engine.dispose()


def test_a_named_volume_moves_with_its_instance_checksummed(moves):
    moves.ok("POST", "/volumes", json={"name": "data", "size_mb": 1024})
    inst = moves.running("db", volumes=[{"volume": "data", "path": "/data"}])
    source, target = inst["host"], _other(inst["host"])
    mig = moves.ok("POST", "/instances/db/migrate", json={})
    assert moves.desired(source)[0][inst["id"]]["snapshot"]["volumes"] is True
    vol_id = moves.ok("GET", "/volumes/data")["id"]
    copy = {
        "pull": f"198.18.0.2:5000/dockyard/volumes@{DIGEST}",
        "checksum": "sha256:" + "cd" * 32,
    }
    _snapshot_done(moves, inst, mig["id"], source, volumes={vol_id: copy})
    want, state = moves.desired(target)
    assert want[inst["id"]]["volume_sources"] == {vol_id: copy}
    assert vol_id in {v["id"] for v in state["volumes"]}  # its data is to live here
    assert vol_id in {v["id"] for v in moves.desired(source)[1]["volumes"]}  # and stays there
    moves.report(inst["id"], target, power_state="running", task_done="migrating")
    assert moves.ok("GET", "/volumes/data")["host"] == target
    assert vol_id not in {v["id"] for v in moves.desired(source)[1]["volumes"]}
    assert moves.desired(target)[0][inst["id"]]["volume_sources"] == {}


def test_a_volume_shared_with_another_instance_does_not_move(moves):
    moves.ok("POST", "/volumes", json={"name": "data", "size_mb": 64})
    moves.running("a", volumes=[{"volume": "data", "path": "/data"}])
    moves.running("b", volumes=[{"volume": "data", "path": "/data"}])
    r = moves.call("POST", "/instances/a/migrate", json={})
    assert r.status_code == 409 and "also mounted by b" in r.json()["detail"]


def test_deleting_an_instance_mid_move_ends_the_migration_and_frees_both_hosts(moves):
    inst = moves.running("web", flavor="pinned")
    source, target = inst["host"], _other(inst["host"])
    mig = moves.ok("POST", "/instances/web/migrate", json={})
    _snapshot_done(moves, inst, mig["id"], source)  # the instance belongs to the target now
    moves.ok("DELETE", "/instances/web")
    assert moves.desired(target)[0][inst["id"]]["power"] == "deleted"
    r = moves.report(inst["id"], target, power_state="nostate", gone=True)
    assert r.status_code == 204
    ended = moves.migration(mig["id"])
    assert ended["status"] == "error" and "abandoned" in ended["reason"]
    assert moves.call("GET", "/instances/web").status_code == 404
    for host in (source, target):
        assert inst["id"] not in moves.desired(host)[0]
        assert moves.ok("GET", f"/hosts/{host}")["pinned_cores"] == {}


def test_members_see_only_their_projects_migrations(moves):
    tok = _member(moves)
    moves.running("mine", token=tok)
    moves.running("theirs")
    moves.ok("POST", "/instances/mine/migrate", json={})
    moves.ok("POST", "/instances/theirs/migrate", json={})
    seen = moves.ok("GET", "/migrations", tok)
    assert [m["instance"]["name"] for m in seen] == ["mine"]
    all_ = moves.ok("GET", "/migrations")
    other = next(m for m in all_ if m["instance"]["name"] == "theirs")
    assert moves.call("GET", f"/migrations/{other['id']}", tok).status_code == 404


# --- drain


def test_drain_disables_the_host_and_migrates_what_fits_listing_the_rest(moves):
    moves.ok("POST", "/server-groups", json={"name": "g", "policy": "anti-affinity"})
    a = moves.running("a", group="g")
    b = moves.running("b", group="g")  # anti-affinity: on the other host
    assert a["host"] != b["host"]
    c = moves.running("c", availability_zone="nova")
    host = a["host"]
    on_host = [i for i in (a, b, c) if i["host"] == host]
    r = moves.call("POST", f"/hosts/{host}/drain")
    assert r.status_code == 202, r.text
    result = r.json()
    assert moves.ok("GET", f"/hosts/{host}")["disabled_reason"] == "draining"
    moved = {m["instance"]["name"] for m in result["migrations"]}
    stuck = {u["instance"]["name"]: u for u in result["unplaced"]}
    assert "a" in stuck and "ServerGroupAntiAffinityFilter" in stuck["a"]["reasons"]
    assert moved == {i["name"] for i in on_host} - {"a"}
    for mig in result["migrations"]:
        assert mig["target"] == _other(host) and mig["status"] == "snapshotting"
    assert moves.ok("GET", "/instances/a")["task_state"] is None


# --- resize --allow-migrate


def test_a_resize_that_no_longer_fits_migrates_when_allowed_and_resizes_on_the_target(moves):
    moves.ok("POST", "/flavors", json={"name": "big", "vcpus": 2, "memory_mb": 5000})
    inst = moves.running("web")
    source, target = inst["host"], _other(inst["host"])
    moves.running("filler", flavor="big", availability_zone="nova")  # now one host is full
    filler_host = moves.ok("GET", "/instances/filler")["host"]
    if filler_host != source:  # make the source the full one
        source, target = target, source
        mig = moves.ok("POST", "/instances/web/migrate", json={"host": source})
        _snapshot_done(moves, inst, mig["id"], target)
        moves.report(inst["id"], source, power_state="running", task_done="migrating")
    r = moves.call("POST", "/instances/web/resize", json={"flavor": "big"})
    assert r.status_code == 409 and "--allow-migrate" in r.json()["detail"]
    member = _member(moves)
    r = moves.call(
        "POST", "/instances/web/resize", member, json={"flavor": "big", "allow_migrate": True}
    )
    assert r.status_code == 403
    r = moves.call("POST", "/instances/web/resize", json={"flavor": "big", "allow_migrate": True})
    assert r.status_code == 202, r.text
    assert r.json()["task_state"] == "migrating" and r.json()["flavor"] == "small"
    mig = moves.ok("GET", "/migrations", params={"instance": "web"})[-1]
    assert (mig["source"], mig["target"], mig["status"]) == (source, target, "snapshotting")
    assert moves.ok("GET", f"/hosts/{target}")["memory_mb_used"] == 5000  # claimed as big
    _snapshot_done(moves, inst, mig["id"], source)
    moves.report(inst["id"], target, power_state="running", task_done="migrating")
    after = moves.ok("GET", "/instances/web")
    assert (after["host"], after["flavor"], after["memory_mb"]) == (target, "big", 5000)
    assert after["task_state"] is None and after["ip"] == inst["ip"]
    assert moves.desired(target)[0][inst["id"]]["memory_mb"] == 5000


def test_a_snapshot_and_a_migrate_of_one_instance_at_once_one_wins(tmp_path, backend_db):
    _, app, token = _cloud(tmp_path, db=backend_db)
    with TestClient(app) as client:
        moves = Moves(client, token)
        moves.catalog()
        moves.agents = {h: moves.register(h) for h in ("h1", "h2")}
        moves.running("web")
        answers: dict[str, int] = {}
        calls = {
            "migrate": ("/instances/web/migrate", {}),
            "snapshot": ("/instances/web/snapshot", {"image": "web-snap"}),
        }

        def go(what: str) -> None:
            path, body = calls[what]
            answers[what] = moves.call("POST", path, json=body).status_code

        threads = [threading.Thread(target=go, args=(w,)) for w in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers.values()) == [202, 409], answers
        task = moves.ok("GET", "/instances/web")["task_state"]
        assert task == ("migrating" if answers["migrate"] == 202 else "snapshotting")


def test_a_drain_moves_a_few_at_a_time_and_the_rest_wait_running(tmp_path):
    """Three instances on h1, AT_ONCE (2) migrate at once; the third stays queued,
    still running on h1 with no snapshot order, until one of the first two ends."""
    _, app, token = _cloud(tmp_path, every=0.1)
    with TestClient(app) as client:
        moves = Moves(client, token)
        moves.catalog()
        moves.agents = {"h1": moves.register("h1")}
        made = [moves.running(f"d{i}") for i in range(3)]
        moves.agents["h2"] = moves.register("h2")
        result = moves.ok("POST", "/hosts/h1/drain")
        status = {m["instance"]["name"]: m["status"] for m in result["migrations"]}
        assert status == {"d0": "snapshotting", "d1": "snapshotting", "d2": "queued"}
        wanted, _ = moves.desired("h1")
        d2 = wanted[made[2]["id"]]
        assert (d2["power"], d2["snapshot"]) == ("running", None)
        assert wanted[made[0]["id"]]["power"] == "stopped"

        first = next(m for m in result["migrations"] if m["instance"]["name"] == "d0")
        _snapshot_done(moves, made[0], first["id"], "h1")
        moves.report(made[0]["id"], "h2", power_state="running", task_done="spawning")
        assert moves.migration(first["id"])["status"] == "finished"
        third = next(m for m in result["migrations"] if m["instance"]["name"] == "d2")
        deadline = time.monotonic() + 10
        while moves.migration(third["id"])["status"] == "queued":
            assert time.monotonic() < deadline, "the queued migration never got its turn"
            time.sleep(0.1)
        wanted, _ = moves.desired("h1")
        assert wanted[made[2]["id"]]["snapshot"]["id"] == third["id"]
