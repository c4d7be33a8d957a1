"""A request's database work commits before the answer: a 204 means it is gone."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


def _rootfs_image(cloud) -> tuple[str, Path]:
    img = cloud.ok("POST", "/images", json={"name": "fs", "source": "rootfs"})
    content = b"tarball" * 100
    cloud.ok("PUT", "/images/fs/file", content=content)
    sha = hashlib.sha256(content).hexdigest()
    path = Path(cloud.client.app.state.image_dir) / f"{img['id']}.{sha}.tar"
    assert path.exists()
    return img["id"], path


def _delete_through_agent(cloud, token: str, iid: str) -> None:
    cloud.ok("DELETE", f"/instances/{iid}")
    cloud.ok(
        "PUT", f"/agent/instances/{iid}/state", token, json={"power_state": "nostate", "gone": True}
    )
    assert cloud.call("GET", f"/instances/{iid}").status_code == 404


@pytest.mark.parametrize("kind", ["flavors", "images", "networks"])
def test_delete_of_what_only_deleted_instances_used_is_gone_after_204(cloud, kind):
    cloud.catalog()
    _, path = _rootfs_image(cloud)
    token = cloud.register("h1")
    inst = cloud.create("web", image="fs").json()
    _delete_through_agent(cloud, token, inst["id"])
    key = {"flavors": "small", "images": "fs", "networks": "net"}[kind]
    r = cloud.call("DELETE", f"/{kind}/{key}")
    assert r.status_code == 204, r.text
    assert cloud.call("GET", f"/{kind}/{key}").status_code == 404
    assert key not in [x["name"] for x in cloud.ok("GET", f"/{kind}")]
    if kind == "images":
        assert not path.exists()
    # a new catalogue object of the same name works again
    if kind == "flavors":
        cloud.ok("POST", "/flavors", json={"name": "small", "vcpus": 1, "memory_mb": 64})


@pytest.mark.parametrize("kind", ["flavors", "images", "networks"])
def test_delete_of_what_a_live_instance_uses_is_409_naming_it_and_it_stays(cloud, kind):
    cloud.catalog()
    _, path = _rootfs_image(cloud)
    cloud.register("h1")
    assert cloud.create("web", image="fs").status_code == 202
    key = {"flavors": "small", "images": "fs", "networks": "net"}[kind]
    r = cloud.call("DELETE", f"/{kind}/{key}")
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "web" in r.json()["detail"]
    assert cloud.call("GET", f"/{kind}/{key}").status_code == 200
    assert path.exists()


def test_a_failed_commit_is_the_answer_not_a_204(cloud):
    """Whatever fails in the commit reaches the client as problem+json, not after a 204."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    cloud.ok("POST", "/flavors", json={"name": "doomed", "vcpus": 1, "memory_mb": 64})
    engine = cloud.client.app.state.db.engine

    def broken_commit(conn):
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(engine, "commit", broken_commit)
    try:
        r = cloud.call("DELETE", "/flavors/doomed")
    finally:
        event.remove(engine, "commit", broken_commit)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "disk I/O error" in r.json()["detail"]
    assert cloud.call("GET", "/flavors/doomed").status_code == 200


def test_identity_handlers_also_commit_before_answering(cloud):
    """Projects (identity.py) fail with their commit too, not with a 201 before it."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    engine = cloud.client.app.state.db.engine

    def broken_commit(conn):
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(engine, "commit", broken_commit)
    try:
        r = cloud.call("POST", "/projects", json={"name": "lost"})
    finally:
        event.remove(engine, "commit", broken_commit)
    assert r.status_code == 503, r.text
    assert "lost" not in [p["name"] for p in cloud.ok("GET", "/projects")]


def test_the_old_flavor_of_a_resize_in_flight_cannot_be_deleted(cloud):
    """A failed resize goes back to its old flavor: deleting it meanwhile would leave the
    instance stuck in resizing, every agent report refused."""
    cloud.catalog()
    token = cloud.register("h1")
    inst = cloud.create("a").json()
    state = f"/agent/instances/{inst['id']}/state"
    cloud.ok("PUT", state, token, json={"power_state": "running", "task_done": "spawning"})
    cloud.ok("POST", "/instances/a/resize", json={"flavor": "pinned"})
    r = cloud.call("DELETE", "/flavors/small")
    assert r.status_code == 409 and "a" in r.json()["detail"], r.text
    failed = {"power_state": "running", "task_done": "resizing", "error": "no room"}
    cloud.ok("PUT", state, token, json=failed)
    back = cloud.ok("GET", "/instances/a")
    assert (back["flavor"], back["task_state"], back["status"]) == ("small", None, "ACTIVE")


def test_a_new_upload_replaces_the_file_only_with_its_commit(cloud):
    """The file the committed row names is never overwritten: a commit that fails
    leaves the old tarball and hash in force (and downloadable), one that succeeds
    leaves only the new tarball."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    image_id, old_path = _rootfs_image(cloud)
    old = cloud.call("GET", "/images/fs/file").content
    engine = cloud.client.app.state.db.engine

    def broken_commit(conn):
        raise OperationalError("COMMIT", {}, Exception("database or disk is full"))

    event.listen(engine, "commit", broken_commit)
    try:
        r = cloud.call("PUT", "/images/fs/file", content=b"newer" * 100)
    finally:
        event.remove(engine, "commit", broken_commit)
    assert r.status_code == 503, r.text
    assert cloud.ok("GET", "/images/fs")["sha256"] == hashlib.sha256(old).hexdigest()
    assert cloud.call("GET", "/images/fs/file").content == old

    cloud.ok("PUT", "/images/fs/file", content=b"newest" * 100)
    files = sorted(p.name for p in old_path.parent.iterdir())
    sha = hashlib.sha256(b"newest" * 100).hexdigest()
    assert files == [f"{image_id}.{sha}.tar"]
    assert cloud.call("GET", "/images/fs/file").content == (b"newest" * 100)
