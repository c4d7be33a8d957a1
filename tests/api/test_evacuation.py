"""Evacuation of a dead host and fencing, server side (issue 11 item 4), driven by fake
agents' reports: refused while the host is up; instances rebuilt elsewhere with their
identity, from their newest snapshot; the dead host's desired state fences them and
keeps their volumes until an admin releases the data."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.db import models as m
from dockyard.db.session import Database
from tests.api.conftest import Cloud
from tests.api.test_api import ED25519

DOWN_AFTER = 4.0  # short, yet long enough for a loaded CI machine between a register and a
# create (at 2 s both hosts went down in between once, two xdist workers and more running)


@pytest.fixture
def quick(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/dockyard.db", timedelta(seconds=DOWN_AFTER))
    token = init(db)
    with TestClient(create_app(db, tmp_path)) as client:
        cloud = Cloud(client, token)
        cloud.db = db
        yield cloud
    db.engine.dispose()


def _report(cloud, token, iid, **body):
    return cloud.call("PUT", f"/agent/instances/{iid}/state", token, json=body)


def _running(cloud, token, name, **kw):
    r = cloud.create(name, **kw)
    assert r.status_code == 202, r.text
    iid = r.json()["id"]
    assert (
        _report(cloud, token, iid, power_state="running", task_done="spawning").status_code == 204
    )
    return r.json()


def _kill(cloud, dead, *alive):
    """``dead`` stops sending heartbeats; the others keep theirs."""
    time.sleep(DOWN_AFTER + 0.1)
    for name, token in alive:
        cloud.ok("POST", f"/agent/hosts/{name}/heartbeat", token)
    assert cloud.ok("GET", f"/hosts/{dead}")["state"] == "down"


def _snapshot_of(cloud, iid, name="web-snap"):
    cloud.ok("POST", "/images", json={"name": name, "source": "docker", "ref": f"{name}:1"})
    with cloud.db.session() as s:
        s.execute(update(m.Image).where(m.Image.name == name).values(snapshot_of=iid))


def test_evacuating_a_live_host_is_refused_saying_how_to_make_it_dead(cloud):
    cloud.catalog()
    cloud.register("h1")
    r = cloud.call("POST", "/hosts/h1/evacuate")
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "--host-down-after" in r.json()["detail"] and "is up" in r.json()["detail"]


def test_a_dead_hosts_instance_is_rebuilt_elsewhere_with_its_identity_and_fenced(quick):
    quick.catalog()
    t1 = quick.register("h1")
    t2 = quick.register("h2", memory_mb=4096)  # less free RAM: spread places on h1 first
    quick.ok("POST", "/volumes", json={"name": "data", "size_mb": 64})
    before = _running(
        quick, t1, "web", ssh_keys=[ED25519], volumes=[{"volume": "data", "path": "/data"}]
    )
    assert before["host"] == "h1"
    iid = before["id"]
    _snapshot_of(quick, iid)
    _kill(quick, "h1", ("h2", t2))

    out = quick.call("POST", "/hosts/h1/evacuate")
    assert out.status_code == 202, out.text
    result = out.json()
    assert result["unplaced"] == []
    [ev] = result["evacuations"]
    assert (ev["instance"], ev["source"], ev["target"]) == ("web", "h1", "h2")
    assert (ev["status"], ev["source_state"], ev["fenced"]) == ("starting", "kept", False)
    assert ev["rebuilt_from"] == "web-snap" and ev["from_snapshot"] is True
    assert "lost unless recovered" in ev["note"] and "dockyard server recover web" in ev["note"]
    assert "volumes data start empty on h2" in ev["note"]

    inst = quick.ok("GET", f"/instances/{iid}")
    same = ("id", "ip", "mac", "hostname", "ssh_keys", "vcpus", "memory_mb", "flavor")
    assert {k: inst[k] for k in same} == {k: before[k] for k in same}
    assert (inst["host"], inst["status"], inst["image"]) == ("h2", "BUILD", "web-snap")
    assert quick.ok("GET", "/volumes/data")["host"] == "h2"  # an empty one there

    new = quick.ok("GET", "/agent/hosts/h2/desired", t2)
    [want] = new["instances"]
    assert (want["id"], want["power"], want["image_ref"]) == (iid, "running", "web-snap:1")
    assert want["net"]["ip"] == before["ip"] and want["net"]["mac"] == before["mac"]
    vol_id = want["volumes"][0]["volume_id"]
    assert vol_id in [v["id"] for v in new["volumes"]]

    # the dead host, back: told to fence it on the image it ran, and to keep its volume
    quick.ok("POST", "/agent/hosts/h1/heartbeat", t1)
    old = quick.ok("GET", "/agent/hosts/h1/desired", t1)
    [fenced] = old["instances"]
    assert (fenced["id"], fenced["power"], fenced["image_ref"]) == (iid, "fenced", "bb:latest")
    assert [v["id"] for v in old["volumes"]] == [vol_id]

    # the new host's agent says it runs: finished, ACTIVE, the action log says what it lost
    assert _report(quick, t2, iid, power_state="running", task_done="spawning").status_code == 204
    assert quick.ok("GET", f"/instances/{iid}")["status"] == "ACTIVE"
    [ev] = quick.ok("GET", "/hosts/h1/evacuations")
    assert ev["status"] == "finished" and ev["finished_at"]
    evac = [a for a in quick.ok("GET", f"/instances/{iid}/actions") if a["action"] == "evacuate"]
    assert evac[0]["result"] == "success" and "lost unless recovered" in evac[0]["message"]

    # the old host's ordinary reports are refused; its fenced report is recorded
    assert _report(quick, t1, iid, power_state="shutdown").status_code == 404
    assert _report(quick, t1, iid, power_state="shutdown", fenced=True).status_code == 204
    [ev] = quick.ok("GET", "/hosts/h1/evacuations")
    assert ev["fenced"] is True and ev["source_state"] == "kept"
    fence = [a for a in quick.ok("GET", f"/instances/{iid}/actions") if a["action"] == "fence"]
    assert "evacuated, data kept" in fence[0]["message"]

    # released: the old host drops the instance and the volume's data
    rel = quick.ok("POST", f"/migrations/{ev['id']}/release")
    assert rel["source_state"] == "released"
    old = quick.ok("GET", "/agent/hosts/h1/desired", t1)
    assert old["instances"] == [] and old["volumes"] == []
    assert quick.ok("GET", "/agent/hosts/h2/desired", t2)["instances"][0]["power"] == "running"


def test_instances_that_fit_nowhere_are_listed_with_why_and_stay(quick):
    quick.catalog()
    t1 = quick.register("h1")
    t2 = quick.register("h2", memory_mb=4096, availability_zone="az2")
    a = _running(quick, t1, "a", availability_zone="nova")
    _kill(quick, "h1", ("h2", t2))
    result = quick.ok("POST", "/hosts/h1/evacuate")
    assert result["evacuations"] == []
    [miss] = result["unplaced"]
    assert miss["instance"] == "a" and "zone" in miss["reason"].lower(), miss
    assert quick.ok("GET", f"/instances/{a['id']}")["host"] == "h1"


def test_a_failed_rebuild_keeps_the_ip_and_says_how_to_retry(quick):
    quick.catalog()
    t1 = quick.register("h1")
    t2 = quick.register("h2", memory_mb=4096)
    inst = _running(quick, t1, "web")
    _kill(quick, "h1", ("h2", t2))
    [ev] = quick.ok("POST", "/hosts/h1/evacuate")["evacuations"]
    assert ev["rebuilt_from"] == "img" and ev["from_snapshot"] is False
    assert "no snapshot" in ev["note"]
    r = _report(quick, t2, inst["id"], power_state="shutdown", task_done="spawning", error="no")
    assert r.status_code == 204
    after = quick.ok("GET", f"/instances/{inst['id']}")
    assert (after["status"], after["ip"], after["host"]) == ("ERROR", inst["ip"], "h2")
    assert "dockyard server start web" in after["fault"]
    assert quick.ok("GET", "/hosts/h1/evacuations")[0]["status"] == "error"


@pytest.fixture
def migrating(tmp_path):
    """As ``quick``, with a (never contacted) registry: migrations need one."""
    from dockyard.api.registry import RegistrySettings

    db = Database(f"sqlite:///{tmp_path}/dockyard.db", timedelta(seconds=DOWN_AFTER))
    token = init(db)
    app = create_app(db, tmp_path, registry=RegistrySettings("127.0.0.1:5999"))
    with TestClient(app) as client:
        cloud = Cloud(client, token)
        cloud.catalog()
        yield cloud
    db.engine.dispose()


def test_an_instance_is_not_moved_back_onto_the_host_that_keeps_its_old_copy(migrating):
    """The dead host keeps the evacuated instance's old container and volumes (fenced);
    migrating the instance back there would start that old copy, so it is refused until
    an admin releases it, and the scheduler skips that host meanwhile."""
    cloud = migrating
    t1 = cloud.register("h1")
    t2 = cloud.register("h2", memory_mb=4096)
    iid = _running(cloud, t1, "web")["id"]
    _kill(cloud, "h1", ("h2", t2))
    [ev] = cloud.ok("POST", "/hosts/h1/evacuate")["evacuations"]
    assert _report(cloud, t2, iid, power_state="running", task_done="spawning").status_code == 204
    cloud.ok("POST", "/agent/hosts/h1/heartbeat", t1)  # h1 is back, keeping the copy

    refused = cloud.call("POST", f"/instances/{iid}/migrate", json={"host": "h1"})
    assert refused.status_code == 409, refused.text
    assert f"dockyard host release {ev['id']}" in refused.json()["detail"]
    nowhere = cloud.call("POST", f"/instances/{iid}/migrate", json={})
    assert nowhere.status_code == 409  # h1 is the only other host
    assert cloud.ok("GET", f"/instances/{iid}")["host"] == "h2"

    cloud.ok("POST", f"/migrations/{ev['id']}/release")
    moved = cloud.call("POST", f"/instances/{iid}/migrate", json={"host": "h1"})
    assert moved.status_code == 202, moved.text
    assert cloud.ok("GET", f"/instances/{iid}")["task_state"] == "migrating"


def test_evacuating_a_host_settles_the_migrations_in_flight_from_it_first(migrating):
    """web was migrating away from h1 (its source stopping and pushing) when h1 died:
    the evacuation ends that migration as the checker would (source down) and then
    rebuilds web elsewhere; one task, one record in flight, claims on one host."""
    cloud = migrating
    t1 = cloud.register("h1")
    t2 = cloud.register("h2", memory_mb=4096)
    iid = _running(cloud, t1, "web")["id"]
    mig = cloud.ok("POST", f"/instances/{iid}/migrate", json={"host": "h2"})
    assert mig["status"] == "snapshotting"
    _kill(cloud, "h1", ("h2", t2))

    out = cloud.ok("POST", "/hosts/h1/evacuate")
    [ev] = out["evacuations"]
    assert (ev["source"], ev["target"], ev["status"]) == ("h1", "h2", "starting")
    ended = cloud.ok("GET", f"/migrations/{mig['id']}")
    assert ended["status"] == "error" and "down" in ended["reason"], ended
    inst = cloud.ok("GET", f"/instances/{iid}")
    assert (inst["host"], inst["task_state"]) == ("h2", "spawning")
    in_flight = [m for m in cloud.ok("GET", "/migrations", params={"instance": iid})
                 if m["status"] not in ("finished", "error")]  # fmt: skip
    assert len(in_flight) == 1  # the evacuation only
