"""Volumes through the API: host paths are admins' only, named volumes are the tenants'."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dockyard.api.app import create_app
from dockyard.api.server import init
from tests.api.conftest import Cloud


@pytest.fixture
def cloud(backend_db, tmp_path):
    """On SQLite and PostgreSQL: volume claims lock rows differently on each."""
    token = init(backend_db)
    with TestClient(create_app(backend_db, tmp_path)) as client:
        yield Cloud(client, token)


def _users(cloud):
    for p in ("p1", "p2"):
        cloud.ok("POST", "/projects", json={"name": p})
    alice = cloud.ok("POST", "/users", json={"name": "alice", "project": "p1"})["token"]
    bob = cloud.ok("POST", "/users", json={"name": "bob", "project": "p2"})["token"]
    rita = cloud.ok("POST", "/users", json={"name": "rita", "project": "p1", "role": "reader"})
    return alice, bob, rita["token"]


def _gone(cloud, token, inst):
    """The agent destroyed ``inst``: it is deleted for good."""
    cloud.ok("DELETE", f"/instances/{inst['id']}")
    body = {"power_state": "nostate", "task_done": "deleting", "gone": True}
    cloud.ok("PUT", f"/agent/instances/{inst['id']}/state", token, json=body)


@pytest.mark.parametrize(
    "host_path", ["/", "/etc", "/var/run/docker.sock", "/root/.ssh", "/srv/data"]
)
def test_a_member_mounting_a_host_path_gets_403_naming_named_volumes(cloud, host_path):
    cloud.catalog()
    cloud.register()
    alice, _, _ = _users(cloud)
    r = cloud.create("evil", alice, volumes=[{"host_path": host_path, "path": "/host"}])
    assert r.status_code in (403, 422), r.text
    assert r.headers["content-type"] == "application/problem+json"
    if r.status_code == 403:  # "/" itself is refused for everyone (422)
        assert "dockyard volume create" in r.json()["detail"]
    assert cloud.ok("GET", "/instances", alice) == []


def test_an_admin_may_mount_a_host_path_but_not_the_root_or_over_proc(cloud):
    cloud.catalog()
    cloud.register()
    r = cloud.create(
        "ops", volumes=[{"host_path": "/srv/data", "path": "/data", "read_only": True}]
    )
    assert r.status_code == 202, r.text
    assert r.json()["volumes"] == [
        {"volume": None, "host_path": "/srv/data", "path": "/data", "read_only": True}
    ]
    for host_path, path, why in [
        ("/", "/host", "root directory"),
        ("/srv/../etc", "/data", "normalised"),
        ("srv", "/data", "absolute"),
        ("/srv", "/proc", "/proc"),
        ("/srv", "/sys/fs", "/sys"),
        ("/srv", "/run", "/run/dockyard"),
        ("/srv", "/", "cover"),
    ]:
        r = cloud.create("bad", volumes=[{"host_path": host_path, "path": path}])
        assert r.status_code == 422, (host_path, path, r.text)
        assert why in r.json()["detail"], r.json()["detail"]


def test_volume_crud_is_project_scoped_and_readers_only_read(cloud):
    alice, bob, rita = _users(cloud)
    vol = cloud.ok("POST", "/volumes", alice, json={"name": "data", "size_mb": 1024})
    assert (vol["name"], vol["project"], vol["size_mb"]) == ("data", "p1", 1024)
    assert (vol["host"], vol["status"], vol["attached_to"]) == (None, "available", [])
    r = cloud.call("POST", "/volumes", alice, json={"name": "data", "size_mb": 64})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    assert (
        cloud.call("POST", "/volumes", bob, json={"name": "data", "size_mb": 64}).status_code == 201
    )
    r = cloud.call("POST", "/volumes", alice, json={"name": "huge", "size_mb": 2**40})
    assert r.status_code == 422 and "size_mb" in r.json()["detail"]
    assert [v["name"] for v in cloud.ok("GET", "/volumes", rita)] == ["data"]
    assert cloud.ok("GET", f"/volumes/{vol['id']}", rita)["id"] == vol["id"]
    r = cloud.call("POST", "/volumes", rita, json={"name": "mine", "size_mb": 64})
    assert r.status_code == 403 and "member role" in r.json()["detail"]
    assert cloud.call("DELETE", "/volumes/data", rita).status_code == 403
    assert cloud.call("GET", f"/volumes/{vol['id']}", bob).status_code == 404
    assert cloud.call("DELETE", f"/volumes/{vol['id']}", bob).status_code == 404
    assert cloud.call("DELETE", "/volumes/data", alice).status_code == 204
    assert cloud.call("GET", f"/volumes/{vol['id']}", alice).status_code == 404
    assert [v["project"] for v in cloud.ok("GET", "/volumes", bob)] == ["p2"]


def test_another_projects_volume_cannot_be_attached(cloud):
    cloud.catalog()
    cloud.register()
    alice, bob, _ = _users(cloud)
    cloud.ok("POST", "/volumes", bob, json={"name": "secret", "size_mb": 64})
    r = cloud.create("thief", alice, volumes=[{"volume": "secret", "path": "/data"}])
    assert r.status_code == 404 and "dockyard volume create secret" in r.json()["detail"]


def test_instances_using_a_volume_go_to_its_host_and_block_its_delete(cloud):
    cloud.catalog()
    token = cloud.register("h1", memory_mb=8192)
    cloud.register("h2", memory_mb=16384)  # more free RAM: spread picks it when free to
    alice, _, _ = _users(cloud)
    cloud.ok("POST", "/volumes", alice, json={"name": "data", "size_mb": 64})
    cloud.ok("PATCH", "/hosts/h2", json={"enabled": False})
    first = cloud.create("a", alice, volumes=[{"volume": "data", "path": "/data"}])
    assert first.status_code == 202, first.text
    assert first.json()["host"] == "h1" and first.json()["volumes"][0]["volume"] == "data"
    cloud.ok("PATCH", "/hosts/h2", json={"enabled": True})
    vol = cloud.ok("GET", "/volumes/data", alice)
    assert (vol["host"], vol["status"], vol["attached_to"]) == ("h1", "in-use", ["a"])
    # without the volume an instance goes to the emptier h2; with it, to the data on h1
    assert cloud.create("other", alice).json()["host"] == "h2"
    ro = [{"volume": "data", "path": "/data", "read_only": True}]
    assert cloud.create("b", alice, volumes=ro).json()["host"] == "h1"
    desired = cloud.ok("GET", "/agent/hosts/h1/desired", token)
    assert [v["id"] for v in desired["volumes"]] == [vol["id"]]
    mounts = {d["name"]: d["volumes"] for d in desired["instances"]}
    assert mounts["a"] == [
        {
            "volume": "data",
            "host_path": None,
            "path": "/data",
            "read_only": False,
            "volume_id": vol["id"],
            "size_mb": 64,
        }
    ]
    r = cloud.call("DELETE", "/volumes/data", alice)
    assert r.status_code == 409 and "a, b" in r.json()["detail"]
    assert r.headers["content-type"] == "application/problem+json"


def test_placement_names_the_volume_host_when_it_cannot_take_the_instance(cloud):
    cloud.catalog()
    t1 = cloud.register("h1", memory_mb=128)  # room for one instance
    cloud.register("h2", memory_mb=16384)
    alice, _, _ = _users(cloud)
    cloud.ok("POST", "/volumes", alice, json={"name": "data", "size_mb": 64})
    cloud.ok("POST", "/volumes", alice, json={"name": "logs", "size_mb": 64})
    # pin "data" to h1 by filling h2 out of the way: h2 disabled for the first claim
    cloud.ok("PATCH", "/hosts/h2", json={"enabled": False})
    a = cloud.create("a", alice, volumes=[{"volume": "data", "path": "/data"}]).json()
    assert a["host"] == "h1"
    cloud.ok("PATCH", "/hosts/h2", json={"enabled": True})
    b = cloud.create("b", alice, volumes=[{"volume": "logs", "path": "/logs"}]).json()
    assert b["host"] == "h2"
    r = cloud.create("c", alice, volumes=[{"volume": "data", "path": "/data"}])
    assert r.status_code == 409, r.text
    assert "volume data lives on host h1" in r.json()["detail"]
    assert "RamFilter rejected 1 of 2" in r.json()["detail"]
    both = [{"volume": "data", "path": "/data"}, {"volume": "logs", "path": "/logs"}]
    r = cloud.create("d", alice, volumes=both)
    assert r.status_code == 409 and "different hosts" in r.json()["detail"]
    assert "data on h1" in r.json()["detail"] and "logs on h2" in r.json()["detail"]
    # once the instance is gone the volume can be deleted, and its host's agent is told
    _gone(cloud, t1, a)
    assert cloud.call("DELETE", "/volumes/data", alice).status_code == 204
    assert cloud.ok("GET", "/agent/hosts/h1/desired", t1)["volumes"] == []


def test_volume_quotas_count_volumes_and_their_size(cloud):
    alice, _, _ = _users(cloud)
    cloud.ok("PATCH", "/projects/p1/quota", json={"volumes": 2, "volume_gb": 2})
    cloud.ok("POST", "/volumes", alice, json={"name": "a", "size_mb": 1024})
    r = cloud.call("POST", "/volumes", alice, json={"name": "big", "size_mb": 1025})
    assert r.status_code == 403 and "volume_gb limit 2" in r.json()["detail"], r.text
    cloud.ok("POST", "/volumes", alice, json={"name": "b", "size_mb": 16})
    r = cloud.call("POST", "/volumes", alice, json={"name": "c", "size_mb": 16})
    assert r.status_code == 403 and "volumes limit 2" in r.json()["detail"], r.text
    used = cloud.ok("GET", "/quota", alice)["resources"]
    assert (used["volumes"]["used"], used["volume_gb"]["used"]) == (2, 2)
    assert [v["name"] for v in cloud.ok("GET", "/volumes", alice)] == ["a", "b"]


def test_volume_files_take_room_on_their_hosts_disk(cloud):
    """Sparse files still fill the host when written: a host's disk counts the whole
    size of every volume pinned to it, and a volume new to a host needs room there."""
    cloud.catalog()
    cloud.register("h1", disk_gb=3)
    alice, _, _ = _users(cloud)
    cloud.ok("POST", "/volumes", alice, json={"name": "v1", "size_mb": 2048})
    cloud.ok("POST", "/volumes", alice, json={"name": "v2", "size_mb": 2048})
    assert cloud.create("a", alice, volumes=[{"volume": "v1", "path": "/d"}]).status_code == 202
    r = cloud.create("b", alice, volumes=[{"volume": "v2", "path": "/d"}])
    assert r.status_code == 409 and "DiskFilter rejected 1 of 1" in r.json()["detail"], r.text
    host = cloud.ok("GET", "/hosts/h1")
    assert host["disk_gb_used"] == 2
    # the volume already there needs no more room
    ro = [{"volume": "v1", "path": "/d", "read_only": True}]
    assert cloud.create("c", alice, volumes=ro).status_code == 202
    assert cloud.ok("GET", "/volumes/v2", alice)["host"] is None
