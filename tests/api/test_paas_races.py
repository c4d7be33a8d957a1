"""The deploy controller and self-healing against a user's concurrent change of a
member, on PostgreSQL (read committed: a pass that read the members before the claim
lock would act on what it read, and overwrite a delete committed meanwhile). SQLite
serialises whole write transactions, so these run on PostgreSQL only."""

from __future__ import annotations

import threading

import pytest

from dockyard.db import paas as db_paas
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
