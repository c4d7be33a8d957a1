"""The database work on the spawn path (issue 9, item 3): every create runs a POST, one
desired-state read per wake-up of its host's agent, and a report PUT. Each is held to
a statement budget, and the desired read to one that does not grow with the fleet."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from sqlalchemy import event

STATEMENTS = ("SELECT", "INSERT", "UPDATE", "DELETE")
# the server's background controllers (api/loops.py names their threads after their
# leases) query on their own timers: a pass that falls inside the block is not the request's
CONTROLLERS = {"deploys", "builds", "migrations"}


@contextmanager
def counted(cloud):
    """Statements the server sends to the database inside the block (BEGINs aside)."""
    engine = cloud.client.app.state.db.engine
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_):
        if threading.current_thread().name in CONTROLLERS:
            return
        if statement.lstrip().upper().startswith(STATEMENTS):
            seen.append(statement.split("\n")[0][:80])

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


@contextmanager
def rereading(tmp_path, reread, down_after=None):
    """A cloud whose waiters re-read every ``reread`` seconds (hosts down after
    ``down_after``), with host h1 and the catalog; yields (cloud, h1's token)."""
    from datetime import timedelta

    from fastapi.testclient import TestClient

    from dockyard.api.app import create_app
    from dockyard.api.server import init
    from dockyard.db.session import Database
    from tests.api.conftest import Cloud

    limit = {} if down_after is None else {"host_down_after": timedelta(seconds=down_after)}
    db = Database(f"sqlite:///{tmp_path}/dockyard.db", **limit)
    admin = init(db)
    try:
        with TestClient(create_app(db, tmp_path, watch_reread=reread)) as client:
            cloud = Cloud(client, admin)
            token = cloud.register("h1")
            cloud.catalog()
            yield cloud, token
    finally:
        db.engine.dispose()


def test_a_create_in_an_unlimited_project_counts_no_usage(cloud):
    token = cloud.register("h1")
    cloud.catalog()
    with counted(cloud) as seen:
        r = cloud.create("web1")
    assert r.status_code == 202, r.text
    assert not [q for q in seen if "count(" in q], seen  # no quota set: nothing to count
    assert len(seen) <= 19, seen  # 23 before the fleet view and usage were trimmed
    project = cloud.ok("GET", "/quota")["project"]
    cloud.ok("PATCH", f"/projects/{project}/quota", json={"instances": 1})
    assert cloud.create("web2").status_code == 403  # a limit set is still enforced
    assert token


def test_a_report_reads_its_instance_once(cloud):
    token = cloud.register("h1")
    cloud.catalog()
    inst = cloud.create("web1").json()
    with counted(cloud) as seen:
        cloud.ok("PUT", f"/agent/instances/{inst['id']}/state", token,
                 json={"power_state": "running", "task_done": "spawning"})  # fmt: skip
    assert len([q for q in seen if q.startswith("SELECT instances.")]) == 1, seen
    assert cloud.ok("GET", f"/instances/{inst['id']}")["status"] == "ACTIVE"


def test_the_desired_state_read_does_not_grow_with_the_fleet(cloud):
    token = cloud.register("h1")
    cloud.catalog()
    cloud.create("web1")

    def statements():
        with counted(cloud) as seen:
            cloud.ok("GET", "/agent/hosts/h1/desired", token)
        return seen

    alone = statements()
    for n in range(2, 6):
        cloud.register(f"h{n}")
    for n in range(2, 8):
        cloud.create(f"web{n}")
    assert len(statements()) == len(alone), alone
    assert not [q for q in alone if "sum(" in q], alone  # no other host's usage is read


def test_a_watch_by_id_reads_the_instance_once(cloud):
    """Every --wait reads its instance at each wake-up and every second: by id that is
    one read of the row, and a name that clashes with an id is still ambiguous."""
    cloud.register("h1")
    cloud.catalog()
    inst = cloud.create("web1").json()
    with counted(cloud) as seen:
        out = cloud.ok("GET", f"/instances/{inst['id']}/watch")
    assert out["instance"]["name"] == "web1"
    assert len([q for q in seen if q.startswith("SELECT instances.id, instances.name")]) == 1
    # the token, the row, the name clash: 8 when the row was read twice, 5 with the
    # instance's cores and its network's subnets, which the answer does not show
    assert len(seen) <= 3, seen
    assert cloud.create(inst["id"]).status_code == 202  # named like web1's id
    assert cloud.call("GET", f"/instances/{inst['id']}/watch").status_code == 409


def test_a_waiting_long_poll_reads_only_the_generation_until_there_is_news(tmp_path):
    """Every wake-up of an agent's long poll (any change on its host, a report, the
    periodic re-read) used to build the host's whole desired state to compare one
    number: now the state is built once, when it is answered."""
    with rereading(tmp_path, 0.05) as (cloud, token):
        cloud.create("web1")
        generation = cloud.ok("GET", "/agent/hosts/h1/desired", token)["generation"]
        with counted(cloud) as seen:
            out = cloud.ok("GET", f"/agent/hosts/h1/desired?since={generation}&wait=0.3", token)
        assert out["generation"] == generation and len(out["instances"]) == 1
        looked = [q for q in seen if q.startswith("SELECT hosts.generation")]
        built = [q for q in seen if q.startswith("SELECT instances.")]
        assert len(looked) >= 2, seen  # the first read and at least one re-read
        assert len(built) == 1, seen  # the state itself: once, for the answer
        cloud.create("web2")  # news: answered at once with it
        out = cloud.ok("GET", f"/agent/hosts/h1/desired?since={generation}&wait=5", token)
        assert out["generation"] > generation and len(out["instances"]) == 2


def test_changes_on_a_host_wake_no_read_of_its_recovery_or_build_orders(tmp_path, monkeypatch):
    """Every create and report on a host wakes its desired-state poll; the agent's
    recovery and build order polls used to wake with it and re-read orders that had not
    changed (a tenth of the server's CPU in a burst of 20 creates). They wait on their
    own registries now, which only changes of their orders wake."""
    from fastapi.testclient import TestClient

    from dockyard.api import build_orders, recovery
    from dockyard.api.app import create_app
    from dockyard.api.server import init
    from dockyard.db.session import Database
    from tests.api.conftest import Cloud

    reads: list[str] = []
    for module in (recovery, build_orders):
        read = module._orders

        def counting(*args, _read=read, _name=module.__name__):
            reads.append(_name)
            return _read(*args)

        monkeypatch.setattr(module, "_orders", counting)
    db = Database(f"sqlite:///{tmp_path}/dockyard.db")
    admin = init(db)
    with TestClient(create_app(db, tmp_path, watch_reread=30)) as client:
        cloud = Cloud(client, admin)
        token = cloud.register("h1")
        watch = client.app.state.watch
        for path, own in (("recoveries", watch.recoveries), ("builds", watch.builds)):
            reads.clear()
            changes = threading.Thread(target=_changes, args=(watch, own, reads))
            changes.start()
            out = cloud.ok("GET", f"/agent/hosts/h1/{path}?since=0&wait=4", token)
            changes.join()
            assert out["generation"] == 0 and out["orders"] == [], out
            # the first read, one when its own orders changed, one at the deadline:
            # none for the three changes of the host's desired state
            assert len(reads) == 3, (path, reads)
    db.engine.dispose()


def _changes(watch, own, reads):
    """Once the poll waits (its first read done, on whichever registry): three changes
    of the host's desired state, then one of its own orders, each after the poll is
    waiting again."""
    import time

    def waiting(count):
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if len(reads) >= count and (own._waiters.get("h1") or watch._waiters.get("h1")):
                return
            time.sleep(0.01)

    waiting(1)
    for _ in range(3):
        watch.notify("h1")
        time.sleep(0.1)  # an old poll would have read again by now, and waited again
        waiting(1)
    own.notify("h1")
    waiting(2)


FULL = "SELECT instances.id, instances.name"  # the whole instance, with its joins
STAMP = "SELECT instances.updated_at, instances.deleted_at, hosts.last_heartbeat"


def test_a_waiting_watch_compares_a_stamp_and_reads_the_instance_only_now_and_then(tmp_path):
    """Twenty --wait's in a burst of creates each read their whole instance every second
    (a fifth of the server's CPU): between notifications the re-read now compares one
    narrow row, and reads in full every FULL_READ_EVERY re-reads."""
    from dockyard.api.instances import FULL_READ_EVERY

    with rereading(tmp_path, 0.05) as (cloud, token):
        iid = cloud.create("web1").json()["id"]
        version = cloud.ok("GET", f"/instances/{iid}/watch")["version"]
        with counted(cloud) as seen:
            out = cloud.ok("GET", f"/instances/{iid}/watch?since={version}&wait=1")
        assert out["version"] == version  # nothing changed: answered at the deadline
        full = [q for q in seen if q.startswith(FULL)]
        stamps = [q for q in seen if q.startswith(STAMP)]
        assert len(stamps) >= FULL_READ_EVERY, seen  # re-read every 0.05 s for 1 s
        # the first read, one per FULL_READ_EVERY re-reads, the answer's
        assert len(full) <= 2 + len(stamps) // (FULL_READ_EVERY - 1), seen
        # a change still answers at once: the report's notification wakes the watch
        body = {"power_state": "running", "task_done": "spawning"}
        cloud.ok("PUT", f"/agent/instances/{iid}/state", token, json=body)
        out = cloud.ok("GET", f"/instances/{iid}/watch?since={version}&wait=20")
        assert out["instance"]["status"] == "ACTIVE" and out["version"] != version


def test_a_waiting_watch_sees_its_host_go_down_without_a_notification(tmp_path, monkeypatch):
    """A host that stops beating changes what a watcher sees (power "unknown") with no
    write to announce it: the stamp carries the host's being up (no full re-read here)."""
    from dockyard.api import instances

    monkeypatch.setattr(instances, "FULL_READ_EVERY", 10_000)
    with rereading(tmp_path, 0.1, down_after=1) as (cloud, token):
        iid = cloud.create("web1").json()["id"]
        body = {"power_state": "running", "task_done": "spawning"}
        cloud.ok("PUT", f"/agent/instances/{iid}/state", token, json=body)
        cloud.ok("POST", "/agent/hosts/h1/heartbeat", token)
        seen = cloud.ok("GET", f"/instances/{iid}/watch")
        assert seen["instance"]["power_state"] == "running"
        started = time.monotonic()
        out = cloud.ok("GET", f"/instances/{iid}/watch?since={seen['version']}&wait=30")
        assert out["instance"]["power_state"] == "unknown"
        # the host's second without a beat and a few re-reads, not the 30 s wait
        assert time.monotonic() - started < 15
