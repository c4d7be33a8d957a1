"""Environment, config files and health checks of an instance, and its rebuild
(the PaaS's in-place deploy): what the agent is told, and what its reports do."""

from __future__ import annotations

import pytest

CHECK = {"kind": "http", "port": 8080, "path": "/healthz", "interval_s": 1}


def _agent(cloud, token, iid):
    def desired():
        (d,) = [d for d in cloud.ok("GET", "/agent/hosts/h1/desired", token)["instances"]]
        assert d["id"] == iid
        return d

    def report(**kw):
        cloud.ok("PUT", f"/agent/instances/{iid}/state", token, json=kw)

    return desired, report


def _running(cloud, **kw):
    cloud.catalog()
    token = cloud.register("h1")
    inst = cloud.create("web", **kw).json()
    desired, report = _agent(cloud, token, inst["id"])
    report(power_state="running", task_done="spawning")
    return inst["id"], desired, report


def test_env_files_and_check_reach_the_agent_and_health_comes_back(cloud):
    files = [{"path": "/etc/app.conf", "content": "port=8080\n", "mode": 0o600}]
    iid, desired, report = _running(cloud, env={"APP_ENV": "prod"}, files=files, health_check=CHECK)
    d = desired()
    assert d["env"] == {"APP_ENV": "prod"} and d["rebuild_seq"] == 0
    assert d["files"] == files and d["health_check"]["port"] == 8080
    shown = cloud.ok("GET", f"/instances/{iid}")
    assert shown["files"] == ["/etc/app.conf"] and shown["health"] is None
    report(power_state="running", health={"status": "unhealthy", "failures": 3, "detail": "503"})
    assert cloud.ok("GET", f"/instances/{iid}")["health"]["status"] == "unhealthy"
    report(power_state="running", health={"status": "healthy"})
    assert cloud.ok("GET", f"/instances/{iid}")["health"]["status"] == "healthy"


def test_rebuild_keeps_identity_and_ends_on_the_agents_report(cloud):
    iid, desired, report = _running(cloud, env={"A": "1"})
    before = cloud.ok("GET", f"/instances/{iid}")
    cloud.ok("POST", "/images", json={"name": "img2", "source": "docker", "ref": "bb:2"})
    out = cloud.ok(
        "POST", f"/instances/{iid}/rebuild", json={"image": "img2", "health_check": CHECK}
    )
    assert out["task_state"] == "rebuilding" and out["status"] == "REBUILD"
    d = desired()
    assert d["rebuild_seq"] == 1 and d["image_ref"] == "bb:2" and d["env"] == {"A": "1"}
    assert d["power"] == "running" and d["net"]["ip"] == before["ip"]
    again = cloud.call("POST", f"/instances/{iid}/rebuild", json={})
    assert again.status_code == 409 and "rebuilding" in again.json()["detail"]
    report(power_state="running", rebuilt_seq=0)  # an old container's report: not done
    assert cloud.ok("GET", f"/instances/{iid}")["task_state"] == "rebuilding"
    report(power_state="running", rebuilt_seq=1)  # a restarted agent that did it
    after = cloud.ok("GET", f"/instances/{iid}")
    assert after["status"] == "ACTIVE" and after["task_state"] is None
    assert (after["ip"], after["mac"], after["hostname"], after["host"]) == (
        before["ip"], before["mac"], before["hostname"], before["host"]
    )  # fmt: skip
    assert after["image"] == "img2" and after["health_check"]["path"] == "/healthz"
    log = cloud.ok("GET", f"/instances/{iid}/actions")
    assert log[-1]["action"] == "rebuild" and log[-1]["result"] == "success"
    assert "img -> img2" in log[-1]["message"]


def test_failed_rebuild_says_why_and_puts_the_old_image_and_settings_back(cloud):
    iid, desired, report = _running(cloud, env={"A": "1"}, health_check=CHECK)
    cloud.ok("POST", "/images", json={"name": "img2", "source": "docker", "ref": "bb:2"})
    body = {"image": "img2", "env": {"B": "2"}, "health_check": None}
    cloud.ok("POST", f"/instances/{iid}/rebuild", json=body)
    assert desired()["image_ref"] == "bb:2"
    report(power_state="running", task_done="rebuilding", error="pull failed: no such image")
    after = cloud.ok("GET", f"/instances/{iid}")
    assert after["task_state"] is None and "rebuild failed: pull failed" in after["fault"]
    assert "previous image and settings are back" in after["fault"]
    assert after["image"] == "img" and after["env"] == {"A": "1"}
    assert after["health_check"]["port"] == 8080
    d = desired()  # a respawn (a migration, an evacuation) makes what still runs
    assert d["image_ref"] == "bb:latest" and d["env"] == {"A": "1"}
    assert cloud.ok("GET", f"/instances/{iid}/actions")[-1]["result"] == "error"


def test_health_counts_only_from_the_current_running_container(cloud):
    iid, desired, report = _running(cloud, health_check=CHECK)
    healthy = {"status": "healthy"}
    report(power_state="shutdown", health=healthy)  # a stopped container says nothing
    assert cloud.ok("GET", f"/instances/{iid}")["health"] is None
    report(power_state="running", health=healthy)
    assert cloud.ok("GET", f"/instances/{iid}")["health"]["status"] == "healthy"
    cloud.ok("POST", f"/instances/{iid}/rebuild", json={})
    report(power_state="running", rebuilt_seq=0, health=healthy)  # the old container
    assert cloud.ok("GET", f"/instances/{iid}")["health"] is None
    report(power_state="running", rebuilt_seq=1, health={"status": "starting"})
    assert cloud.ok("GET", f"/instances/{iid}")["health"]["status"] == "starting"


def test_no_rebuild_on_a_down_host(cloud, monkeypatch):
    iid, desired, report = _running(cloud)
    monkeypatch.setattr("dockyard.db.hosts.is_up", lambda row, at=None: False)
    r = cloud.call("POST", f"/instances/{iid}/rebuild", json={})
    assert r.status_code == 409 and "is down" in r.json()["detail"]
    monkeypatch.undo()
    assert desired()["rebuild_seq"] == 0


def test_config_files_never_land_on_a_volume(cloud):
    cloud.catalog()
    token = cloud.register("h1")
    cloud.ok("POST", "/volumes", json={"name": "data", "size_mb": 64})
    vol = [{"volume": "data", "path": "/data"}]
    for path in ("/data", "/data/app.conf"):
        r = cloud.create("web", volumes=vol, files=[{"path": path, "content": "x"}])
        assert r.status_code == 422 and "mount point /data" in r.text, r.text
    assert cloud.ok("GET", "/instances") == []
    iid = cloud.create("web", volumes=vol).json()["id"]
    _agent(cloud, token, iid)[1](power_state="running", task_done="spawning")
    r = cloud.call(
        "POST", f"/instances/{iid}/rebuild", json={"files": [{"path": "/data/x", "content": ""}]}
    )
    assert r.status_code == 409 and "mount point /data" in r.json()["detail"]


def test_rebuild_clears_the_check_only_when_asked(cloud):
    iid, desired, report = _running(cloud, health_check=CHECK)
    cloud.ok("POST", f"/instances/{iid}/rebuild", json={})
    assert desired()["health_check"]["port"] == 8080
    report(power_state="running", task_done="rebuilding")
    cloud.ok("POST", f"/instances/{iid}/rebuild", json={"health_check": None})
    assert desired()["health_check"] is None


@pytest.mark.parametrize(
    "body, words",
    [
        ({"files": [{"path": "/proc/self/x", "content": ""}]}, "at or over /proc"),
        ({"files": [{"path": "/proc", "content": ""}]}, "at or over /proc"),
        ({"files": [{"path": "/run", "content": ""}]}, "at or over /run/dockyard"),
        ({"files": [{"path": "/etc/hosts/x", "content": ""}]}, "the agent writes"),
        ({"env": {f"V{i}": "x" * 30000 for i in range(3)}}, "the environment holds"),
        ({"files": [{"path": "/etc/../x", "content": ""}]}, "not normalised"),
        ({"files": [{"path": "/a", "content": "x"}] * 2}, "give each path once"),
        ({"files": [{"path": "/etc/resolv.conf", "content": ""}]}, "the agent writes"),
        ({"files": [{"path": f"/f{i}", "content": "x" * 60000} for i in range(5)]}, "bytes"),
        ({"env": {"1BAD": "x"}}, "not a variable name"),
        ({"env": {"A": "x\x00y"}}, "NUL"),
        ({"health_check": {"kind": "tcp"}}, "needs a port"),
        ({"health_check": {"kind": "cmd", "command": []}}, "command"),
        ({"image": "nope"}, "does not exist"),
    ],
)
def test_bad_rebuilds_are_refused_and_change_nothing(cloud, body, words):
    iid, desired, report = _running(cloud)
    r = cloud.call("POST", f"/instances/{iid}/rebuild", json=body)
    assert r.status_code in (404, 409, 422), r.text
    assert words in r.text
    assert desired()["rebuild_seq"] == 0
    assert cloud.ok("GET", f"/instances/{iid}")["task_state"] is None


def test_another_projects_member_cannot_rebuild(cloud):
    iid, desired, report = _running(cloud)
    cloud.ok("POST", "/projects", json={"name": "other"})
    body = {"name": "eve", "project": "other", "role": "member"}
    eve = cloud.ok("POST", "/users", json=body)["token"]
    r = cloud.call("POST", f"/instances/{iid}/rebuild", eve, json={})
    assert r.status_code == 404
    assert desired()["rebuild_seq"] == 0


def test_after_a_failed_rebuild_health_follows_the_old_container_that_runs_on(cloud):
    iid, desired, report = _running(cloud, health_check=CHECK)
    cloud.ok("POST", f"/instances/{iid}/rebuild", json={})
    report(power_state="running", rebuilt_seq=0, task_done="rebuilding", error="pull failed")
    assert desired()["rebuild_seq"] == 1  # the old container's label stays 0
    report(power_state="running", rebuilt_seq=0, health={"status": "healthy"})
    assert cloud.ok("GET", f"/instances/{iid}")["health"]["status"] == "healthy"
    report(power_state="running", rebuilt_seq=0, health={"status": "unhealthy", "failures": 3})
    assert cloud.ok("GET", f"/instances/{iid}")["health"]["status"] == "unhealthy"
