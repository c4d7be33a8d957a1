"""GET /v1/instances/{key}/watch: a long poll on an instance's state (the CLI's --wait)."""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.responses import JSONResponse

from dockyard.api.app import create_app
from dockyard.api.server import init
from dockyard.cli import servers
from dockyard.cli.client import Api, CliError
from dockyard.db.session import Database
from tests.api.conftest import Cloud
from tests.api.servers import serving_app

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
    assert time.monotonic() - started < WOKEN
    body = r.json()
    assert body["instance"]["id"] == iid and body["instance"]["status"] == "BUILD"
    assert body["version"]


@pytest.fixture
def cloud(tmp_path):
    """The API with its watches' safety-net re-read at 60 s: a watch that answers within
    WOKEN seconds was woken by the change itself, however loaded the machine is."""
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    token = init(db)
    with TestClient(create_app(db, tmp_path, watch_reread=60)) as client:
        yield Cloud(client, token)
    db.engine.dispose()


WOKEN = 5.0  # far below the 20 s wait and the 60 s re-read


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
    # woken by the report, not by the re-read nor the 20 s wait
    assert out["at"] - reported < WOKEN


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
    assert out["at"] - asked < WOKEN


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
    assert out["at"] - gone < WOKEN
    assert _watch(cloud, iid).status_code == 410


def test_wait_is_bounded(cloud):
    iid, _ = _spawned(cloud)
    assert _watch(cloud, iid, wait=61).status_code == 422
    assert _watch(cloud, iid, since="x" * 65).status_code == 422


# The CLI's --wait against a real HTTP server (uvicorn in a thread).


@pytest.fixture
def live(tmp_path):
    """(the app, its database, the admin token), served by each test as it needs."""
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    token = init(db)
    app = create_app(db, tmp_path, watch_reread=60)  # an answer before WOKEN was woken
    yield app, db, token
    db.engine.dispose()


def _serve_and_spawn(app, db, token, tmp_path, name="web"):
    stack = contextlib.ExitStack()
    url = stack.enter_context(serving_app(app))
    admin = httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30)
    stack.callback(admin.close)
    cloud = Cloud(_HttpxAsTestClient(admin), token)
    cloud.catalog()
    agent = cloud.register("h1")
    iid = cloud.create(name).json()["id"]
    api = Api(url.removesuffix("/v1"), token)
    return stack, cloud, agent, iid, api


class _HttpxAsTestClient:
    def __init__(self, http):
        self.http = http

    def request(self, method, path, headers=None, **kw):
        return self.http.request(method, path.removeprefix("/v1"), headers=headers, **kw)


def _wait_in_thread(api, iid, **kw):
    return _in_thread(lambda: servers.wait(api, iid, "web", **kw))


def test_cli_wait_follows_the_watch_without_polling(live, tmp_path, capsys):
    stack, cloud, agent, iid, api = _serve_and_spawn(*live, tmp_path)
    with stack:
        polls = []
        api.find = lambda path: polls.append(path)  # the old way must not be taken
        t, out = _wait_in_thread(api, iid, timeout=30)
        time.sleep(0.3)
        reported = report_spawned(cloud, agent, iid)
        t.join(10)
        assert out["r"]["status"] == "ACTIVE" and not polls
        assert out["at"] - reported < WOKEN
    assert "web: ACTIVE in" in capsys.readouterr().err


def _without_watch(app):
    """``app`` as a server from before the watch answers: 404 on its route."""

    async def older(scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/watch"):
            await JSONResponse({"detail": "Not Found"}, 404)(scope, receive, send)
        else:
            await app(scope, receive, send)

    return older


def test_cli_wait_polls_a_server_without_the_watch(live, tmp_path, capsys):
    app, db, token = live
    stack, cloud, agent, iid, api = _serve_and_spawn(_without_watch(app), db, token, tmp_path)
    with stack:
        t, out = _wait_in_thread(api, iid, timeout=30)
        time.sleep(0.2)
        report_spawned(cloud, agent, iid)
        t.join(10)
        assert out["r"]["status"] == "ACTIVE"
    assert "web: ACTIVE in" in capsys.readouterr().err


def test_cli_wait_from_an_etag_polls_a_server_without_the_watch(live, tmp_path, capsys):
    """The create answered by a newer server (its ETag), the watch by an older one behind
    the same address (404 on the route): polled, not "disappeared"."""
    app, db, token = live
    stack, cloud, agent, iid, api = _serve_and_spawn(_without_watch(app), db, token, tmp_path)
    with stack:
        report_spawned(cloud, agent, iid)
        server, version = api.versioned("POST", f"/instances/{iid}/stop")
        assert version
        answer = (server, version)
        t, out = _in_thread(lambda: servers.wait(api, iid, "web", 30, answer=answer))
        time.sleep(0.2)
        stopped = {"power_state": "shutdown", "task_done": "powering-off"}
        cloud.ok("PUT", f"/agent/instances/{iid}/state", agent, json=stopped)
        t.join(10)
        assert out["r"]["status"] == "SHUTOFF"
    assert "web: SHUTOFF in" in capsys.readouterr().err


def test_a_watch_whose_stamp_read_fails_leaves_no_waiter_behind(live, monkeypatch):
    from dockyard.api import instances as api_instances
    from dockyard.db.session import DatabaseBusy

    app, db, token = live
    with TestClient(app) as client:
        cloud = Cloud(client, token)
        iid, _ = _spawned(cloud)
        version = _watch(cloud, iid).json()["version"]
        app.state.watch.reread = 0.05

        def busy(*_):
            raise DatabaseBusy("the database is busy; try again in a moment")

        monkeypatch.setattr(api_instances, "_stamp", busy)
        r = _watch(cloud, iid, since=version, wait=5)
        assert r.status_code == 503
        assert iid not in app.state.watch.instances._waiters


def test_cli_wait_times_out(live, tmp_path):
    stack, _, _, iid, api = _serve_and_spawn(*live, tmp_path)
    with stack:
        started = time.monotonic()
        with pytest.raises(CliError, match="still BUILD after 1s"):
            servers.wait(api, iid, "web", timeout=1.0)
        assert time.monotonic() - started < 3


def test_cli_delete_wait_ends_on_the_deletion(live, tmp_path, capsys):
    stack, cloud, agent, iid, api = _serve_and_spawn(*live, tmp_path)
    with stack:
        report_spawned(cloud, agent, iid)
        cloud.ok("DELETE", f"/instances/{iid}")
        t, out = _in_thread(lambda: servers.wait(api, iid, "web", 30, gone_ok=True))
        time.sleep(0.2)
        gone = {"power_state": "nostate", "gone": True}
        cloud.ok("PUT", f"/agent/instances/{iid}/state", agent, json=gone)
        t.join(10)
        assert out["r"] is None
    assert "web: deleted" in capsys.readouterr().err


def report_spawned(cloud, agent, iid):
    cloud.ok("PUT", f"/agent/instances/{iid}/state", agent, json=BUSY)
    return time.monotonic()


def test_the_creates_etag_is_where_its_watch_starts(cloud):
    """A client waiting for a new instance starts its watch from the create's answer:
    a watch from that version holds until the instance changes (no read that answers
    at once), and an action's answer carries its version too."""
    cloud.catalog()
    agent = cloud.register("h1")
    r = cloud.create("web")
    assert r.status_code == 202
    iid, version = r.json()["id"], r.headers["etag"].strip('"')
    assert _watch(cloud, iid).json()["version"] == version  # the watch's own version
    started = time.monotonic()
    held = _watch(cloud, iid, since=version, wait=0.5).json()
    assert held["version"] == version and time.monotonic() - started >= 0.5
    t, out = _in_thread(lambda: _watch(cloud, iid, since=version, wait=20))
    time.sleep(0.2)
    cloud.ok("PUT", f"/agent/instances/{iid}/state", agent, json=BUSY)
    t.join(10)
    assert out["r"].json()["instance"]["status"] == "ACTIVE"
    stop = cloud.call("POST", f"/instances/{iid}/stop")
    assert stop.status_code == 202
    assert stop.headers["etag"].strip('"') == _watch(cloud, iid).json()["version"]


def test_cli_wait_starts_from_the_answers_version(live, tmp_path, capsys):
    """`server create --wait` follows the watch from the create's ETag: the watch's
    first read holds instead of answering at once."""
    stack, cloud, agent, _, api = _serve_and_spawn(*live, tmp_path)
    with stack:
        body = {"name": "web2", "image": "img", "flavor": "small", "network": "net"}
        server, version = api.versioned("POST", "/instances", body)
        assert version
        asked = []
        long_poll = api.long_poll

        def counted(path, params, hold):
            asked.append(params["since"])
            return long_poll(path, params, hold)

        api.long_poll = counted
        t, out = _in_thread(
            lambda: servers.wait(api, server["id"], "web2", 30, answer=(server, version))
        )
        time.sleep(0.3)
        report_spawned(cloud, agent, server["id"])
        t.join(10)
        assert out["r"]["status"] == "ACTIVE"
        assert asked == [version]  # one watch, from the create's version, woken by the report
    assert "web2: BUILD" in capsys.readouterr().err
