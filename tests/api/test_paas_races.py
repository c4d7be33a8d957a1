"""The deploy controller and self-healing against a user's concurrent change of a
member, on PostgreSQL (read committed: a pass that read the members before the claim
lock would act on what it read, and overwrite a delete committed meanwhile). SQLite
serialises whole write transactions, so these run on PostgreSQL only."""

from __future__ import annotations

import threading

import pytest

from dockyard.db import deploys as db_deploys
from dockyard.db import paas as db_paas
from dockyard.db.session import DatabaseBusy
from dockyard.lab.procs import wait_for
from tests.api import paas_helpers


@pytest.fixture
def pg(tmp_path):
    yield from paas_helpers._paas("postgresql", tmp_path)


def _delete_meanwhile(cloud, monkeypatch, victim):
    """Right after the pass has read the members, the user deletes ``victim`` (given up
    to half a second: a pass that holds the claim lock makes the delete wait for it)."""
    done: list[int] = []
    real = db_paas.members

    def members(s, stack):
        rows = real(s, stack)
        if not done:
            done.append(0)
            t = threading.Thread(
                target=lambda: done.append(cloud.call("DELETE", f"/instances/{victim}").status_code)
            )
            t.start()
            t.join(0.5)
        return rows

    monkeypatch.setattr(db_paas, "members", members)
    return done


def _after(cloud, done, victim):
    wait_for(lambda: len(done) == 2, 10, "the user's delete")
    assert done[1] in (202, 204)
    return cloud.ok("GET", f"/instances/{victim}")["task_state"]


@pytest.mark.postgres
def test_a_deploy_pass_does_not_overwrite_a_members_delete(pg, monkeypatch):
    assert pg.stack(replicas=2, max_unavailable="1").status_code == 201
    pg.settle()
    pg.step()
    pg.ok("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    victim = min(m["id"] for m in pg.show()["instances"])  # the planner's first pick
    done = _delete_meanwhile(pg, monkeypatch, victim)
    pg.step()
    assert _after(pg, done, victim) == "deleting"


@pytest.mark.postgres
def test_a_healing_pass_does_not_overwrite_a_members_delete(pg, monkeypatch):
    assert pg.stack(replicas=2, progress_deadline_s=10).status_code == 201
    pg.settle()
    pg.step()
    sick = pg.ok("GET", f"/instances/{pg.show()['instances'][0]['id']}")
    pg.report(sick, power_state="running", health={"status": "unhealthy", "failures": 3})
    done = _delete_meanwhile(pg, monkeypatch, sick["id"])
    pg.step(11)  # would restart it
    assert _after(pg, done, sick["id"]) == "deleting"


@pytest.fixture
def lite(tmp_path):
    yield from paas_helpers._paas("sqlite", tmp_path)


def _loses_once(monkeypatch, module, name):
    """The first call loses a race in the database (PostgreSQL: a deadlock or a
    serialization failure, which the session turns into DatabaseBusy)."""
    real, calls = getattr(module, name), []

    def once(*args, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise DatabaseBusy("the database is busy (deadlock detected); try again")
        return real(*args, **kw)

    monkeypatch.setattr(module, name, once)
    return calls


def test_deploy_rollback_and_delete_are_retried_after_a_lost_race(lite, monkeypatch):
    assert lite.stack(replicas=1).status_code == 201
    lite.settle()
    lite.step()
    calls = _loses_once(monkeypatch, db_deploys, "deploy")
    r = lite.call("POST", "/apps/shop/stacks/web/deploys", json={"image": "img2"})
    assert r.status_code == 202 and len(calls) == 2, r.text
    for _ in range(3):
        lite.step()
        lite.settle()
    lite.step()
    assert lite.show()["deploy"]["status"] == "succeeded"
    calls = _loses_once(monkeypatch, db_deploys, "rollback")
    r = lite.call("POST", "/apps/shop/stacks/web/rollback", json={})
    assert r.status_code == 202 and len(calls) == 2, r.text
    monkeypatch.undo()
    lite.step()
    calls = _loses_once(monkeypatch, db_paas, "delete_stack")
    r = lite.call("DELETE", "/apps/shop/stacks/web")
    assert r.status_code == 204 and len(calls) == 2, r.text
