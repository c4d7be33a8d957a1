"""GET /v1/instances/{key}/watch: a long poll on an instance's state (the CLI's --wait)."""

from __future__ import annotations

import threading
import time

BUSY = {"power_state": "running", "task_done": "spawning"}


def _spawned(cloud, name="web"):
    cloud.catalog()
    agent = cloud.register("h1")
    inst = cloud.create(name).json()
    return inst["id"], agent


def _watch(cloud, key, since="", wait=0.0, token=None):
    return cloud.call(
        "GET", f"/instances/{key}/watch", token, params={"since": since, "wait": wait}
    )


def _in_thread(fn):
    out = {}

    def run():
        out["r"], out["at"] = fn(), time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_different_version_answers_at_once(cloud):
    iid, _ = _spawned(cloud)
    started = time.monotonic()
    r = _watch(cloud, iid, since="not-the-version", wait=30)
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 2
    body = r.json()
    assert body["instance"]["id"] == iid and body["instance"]["status"] == "BUILD"
    assert body["version"]


def test_waits_and_answers_on_the_agents_report(cloud):
    iid, agent = _spawned(cloud)
    version = _watch(cloud, "web").json()["version"]  # by name works too
    t, out = _in_thread(lambda: _watch(cloud, iid, since=version, wait=20))
    time.sleep(0.3)
    assert "r" not in out, "the watch answered before anything changed"
    reported = time.monotonic()
    cloud.ok("PUT", f"/agent/instances/{iid}/state", agent, json=BUSY)
    t.join(10)
    assert out["r"].status_code == 200
    body = out["r"].json()
    assert body["instance"]["status"] == "ACTIVE" and body["version"] != version
    # woken by the report, not by the 1 s re-read nor the 20 s wait
    assert out["at"] - reported < 0.3


def test_wakes_on_an_action(cloud):
    iid, agent = _spawned(cloud)
    cloud.ok("PUT", f"/agent/instances/{iid}/state", agent, json=BUSY)
    version = _watch(cloud, iid).json()["version"]
    t, out = _in_thread(lambda: _watch(cloud, iid, since=version, wait=20))
    time.sleep(0.2)
    asked = time.monotonic()
    cloud.ok("POST", f"/instances/{iid}/stop")
    t.join(10)
    assert out["r"].json()["instance"]["task_state"] == "powering-off"
    assert out["at"] - asked < 0.3


def test_times_out_with_the_same_version(cloud):
    iid, _ = _spawned(cloud)
    version = _watch(cloud, iid).json()["version"]
    started = time.monotonic()
    r = _watch(cloud, iid, since=version, wait=1.5)
    took = time.monotonic() - started
    assert r.status_code == 200 and r.json()["version"] == version
    assert 1.4 < took < 5


def test_another_projects_instance_is_not_found(cloud):
    iid, _ = _spawned(cloud)
    cloud.ok("POST", "/projects", json={"name": "other"})
    other = cloud.ok("POST", "/users", json={"name": "eve", "project": "other", "role": "member"})
    r = _watch(cloud, iid, token=other["token"])
    assert r.status_code == 404
    assert cloud.call("GET", f"/instances/{iid}", other["token"]).status_code == 404


def test_a_deletion_ends_the_watch_with_410(cloud):
    iid, agent = _spawned(cloud)
    cloud.ok("PUT", f"/agent/instances/{iid}/state", agent, json=BUSY)
    cloud.ok("DELETE", f"/instances/{iid}")
    version = _watch(cloud, iid).json()["version"]
    t, out = _in_thread(lambda: _watch(cloud, iid, since=version, wait=20))
    time.sleep(0.2)
    gone = time.monotonic()
    cloud.ok(
        "PUT", f"/agent/instances/{iid}/state", agent, json={"power_state": "nostate", "gone": True}
    )
    t.join(10)
    assert out["r"].status_code == 410 and "deleted" in out["r"].json()["detail"]
    assert out["at"] - gone < 0.3
    assert _watch(cloud, iid).status_code == 410


def test_wait_is_bounded(cloud):
    iid, _ = _spawned(cloud)
    assert _watch(cloud, iid, wait=61).status_code == 422
    assert _watch(cloud, iid, since="x" * 65).status_code == 422
