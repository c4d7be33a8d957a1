"""Two dockyard-servers on one PostgreSQL: a change made through one wakes the other's
long polls at once (LISTEN/NOTIFY), and either keeps the cloud working alone.

Both servers re-read the database only every 30 s here (``--watch-reread 30``), so a
long poll that answers within a few seconds was woken by the other server's
notification, not by its own re-read.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, text

from dockyard.db import lease, notify
from dockyard.db.session import Database
from tests.api.conftest import PG_URL, Cloud
from tests.api.server_process import server

pytestmark = pytest.mark.postgres
REREAD = "30"
WOKEN_WITHIN = 10.0  # far below the 30 s re-read: only a notification answers this soon


@pytest.fixture
def pg_url():
    if not PG_URL:
        pytest.skip("PostgreSQL tests need DOCKYARD_TEST_PG_URL (.ci/run sets it)")
    name = f"dytest_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def two_servers(pg_url, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with server(tmp_path / "a", pg_url, "--watch-reread", REREAD) as a:
        # the database has its admin now; B is told the same token
        (tmp_path / "b" / "admin.token").write_text(a.admin + "\n")
        with server(tmp_path / "b", pg_url, "--watch-reread", REREAD) as b:
            with httpx.Client(base_url=a.url, timeout=60) as ca:
                with httpx.Client(base_url=b.url, timeout=60) as cb:
                    yield a, Cloud(ca, a.admin), b, Cloud(cb, b.admin)


def _in_thread(fn):
    out: dict = {}

    def run():
        started = time.monotonic()
        out["r"] = fn()
        out["took"] = time.monotonic() - started

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _desired(cloud, token, since, wait):
    params = {"since": since, "wait": wait}
    return cloud.ok("GET", "/agent/hosts/h1/desired", token, params=params)


def test_an_agent_polling_b_gets_an_instance_created_through_a(two_servers):
    _, a, _, b = two_servers
    a.catalog()
    agent = a.register("h1")
    generation = _desired(b, agent, -1, 0)["generation"]
    t, out = _in_thread(lambda: _desired(b, agent, generation, 25))
    time.sleep(0.5)  # the poll is parked on B
    inst = a.create("web").json()
    t.join(30)
    assert [i["id"] for i in out["r"]["instances"]] == [inst["id"]]
    assert out["took"] < WOKEN_WITHIN, f"B answered after {out['took']:.1f}s: not woken"


def test_a_user_watching_on_b_sees_a_report_made_through_a(two_servers):
    _, a, _, b = two_servers
    a.catalog()
    agent = a.register("h1")
    inst = a.create("web").json()
    version = b.ok("GET", f"/instances/{inst['id']}/watch")["version"]
    t, out = _in_thread(
        lambda: b.ok("GET", f"/instances/{inst['id']}/watch", params={"since": version, "wait": 25})
    )
    time.sleep(0.5)
    report = {"power_state": "running", "task_done": "spawning"}
    a.ok("PUT", f"/agent/instances/{inst['id']}/state", agent, json=report)
    t.join(30)
    assert out["r"]["instance"]["status"] == "ACTIVE"
    assert out["took"] < WOKEN_WITHIN, f"B answered after {out['took']:.1f}s: not woken"
    assert b.ok("GET", f"/instances/{inst['id']}")["status"] == "ACTIVE"


def test_the_cloud_keeps_working_through_b_when_a_dies(two_servers):
    a_proc, a, _, b = two_servers
    a.catalog()
    agent = a.register("h1")
    a_proc.proc.kill()
    a_proc.proc.wait(10)
    generation = _desired(b, agent, -1, 0)["generation"]
    t, out = _in_thread(lambda: _desired(b, agent, generation, 25))
    time.sleep(0.5)
    inst = b.create("web").json()
    t.join(30)
    assert [i["id"] for i in out["r"]["instances"]] == [inst["id"]]
    assert out["took"] < WOKEN_WITHIN
    assert [i["name"] for i in b.ok("GET", "/instances")] == ["web"]


def test_a_listener_ignores_its_own_notifications_and_survives_a_lost_connection(pg_url):
    db = Database(pg_url)
    mine, theirs = notify.PostgresBus(db), notify.PostgresBus(db)
    heard: list[tuple[str, str]] = []
    stop = threading.Event()
    listener = threading.Thread(target=mine.listen, args=(lambda k, v: heard.append((k, v)), stop))
    listener.start()
    try:
        _until(lambda: _listeners(db), "the listener to LISTEN")
        first = _listeners(db)
        mine.publish("host", "own")
        theirs.publish("host", "h1")
        _until(lambda: ("host", "h1") in heard, "the other bus's notification")
        with db.engine.connect() as c:  # cut the listener's connection: it reconnects
            c.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND datname = current_database()"
            ))  # fmt: skip
            c.commit()
        _until(lambda: _listeners(db) - first, "the listener to come back")
        theirs.publish("instance", "i1")
        _until(lambda: ("instance", "i1") in heard, "a notification after the reconnect")
        assert ("host", "own") not in heard
    finally:
        stop.set()
        listener.join(10)
        mine.close()
        theirs.close()
        db.engine.dispose()


def _listeners(db: Database) -> set[int]:
    """Backends whose last statement was a LISTEN (this test's database only)."""
    with db.engine.connect() as c:
        rows = c.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
                " AND datname = current_database()"
            )
        )
        return {int(r[0]) for r in rows}


def _until(pred, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_one_server_holds_a_lease_and_the_other_takes_it_when_the_first_goes(pg_url):
    one, two = Database(pg_url), Database(pg_url)
    first, second = lease.Lease(one, "heartbeats"), lease.Lease(two, "heartbeats")
    try:
        assert first.held()
        assert not second.held()
        assert first.held()  # still its own
        other = lease.Lease(two, "deploys")
        assert other.held()  # another job: another lease
        other.release()
        first.release()  # or its server died: the connection, and the lock, are gone
        assert second.held()
        assert not first.held()
    finally:
        first.release()
        second.release()
        one.engine.dispose()
        two.engine.dispose()


def test_on_sqlite_the_only_server_always_holds_the_lease(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/d.db")
    assert lease.Lease(db, "heartbeats").held()
    db.engine.dispose()
