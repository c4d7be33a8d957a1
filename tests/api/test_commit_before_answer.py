"""A request's database work commits before the answer: a 204 means it is gone."""

from __future__ import annotations

from pathlib import Path

import pytest


def _rootfs_image(cloud) -> tuple[str, Path]:
    img = cloud.ok("POST", "/images", json={"name": "fs", "source": "rootfs"})
    cloud.ok("PUT", "/images/fs/file", content=b"tarball" * 100)
    path = Path(cloud.client.app.state.image_dir) / f"{img['id']}.tar"
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


def test_handlers_on_the_session_dependency_also_commit_before_answering(cloud):
    """identity.py still takes its session from ``DB``: its commit must come first too."""
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
