"""Offline recovery, server side (issue 11 item 5), with a fake agent: which hosts may be
asked, the host's long poll carries the order, the upload is checked against its sha256
and kept for the admin, a refusal reaches the admin with the agent's reason."""

from __future__ import annotations

import hashlib

from dockyard.db import models as m
from dockyard.db import recoveries
from tests.api.test_evacuation import _kill, _report, _running, quick  # noqa: F401
from tests.api.test_roles import _user


def _put(cloud, token, rid, data, sha256):
    headers = {"authorization": f"Bearer {token}", "x-dockyard-sha256": sha256}
    return cloud.client.put(f"/v1/agent/recoveries/{rid}/data", content=data, headers=headers)


def _orders(cloud, token, host="h1", **params):
    return cloud.ok("GET", f"/agent/hosts/{host}/recoveries", token, params=params)


def test_recovery_is_asked_of_a_host_that_holds_the_data_and_nothing_writes(cloud):
    cloud.catalog()
    t1 = cloud.register("h1")
    cloud.register("h2", memory_mb=4096)
    _running(cloud, t1, "web")
    body = {"host": "h1", "path": "/root/notes.txt"}
    r = cloud.call("POST", "/instances/web/recoveries", json=body)
    assert r.status_code == 409 and "stop it first" in r.json()["detail"]
    r = cloud.call("POST", "/instances/web/recoveries", json={"host": "h2", "path": "/root"})
    assert r.status_code == 409 and "holds no data of web" in r.json()["detail"]
    r = cloud.call("POST", "/instances/web/recoveries", json={"host": "h1", "path": "/a/../b"})
    assert r.status_code in (400, 422), r.text
    member = _user(cloud, "al", "member")
    r = cloud.call("POST", "/instances/web/recoveries", member, json=body)
    assert r.status_code == 403  # only admins read instances' disks


def test_the_order_travels_to_the_agent_and_the_tar_back_to_the_admin(quick):  # noqa: F811
    quick.catalog()
    t1 = quick.register("h1")
    t2 = quick.register("h2", memory_mb=4096)
    inst = _running(quick, t1, "web")
    before = _orders(quick, t1)
    assert before["orders"] == []
    _kill(quick, "h1", ("h2", t2))  # dead host: its data may be read (its agent may live)
    rec = quick.ok("POST", "/instances/web/recoveries", json={"host": "h1", "path": "/root/n"})
    assert rec["status"] == "queued"
    [order] = _orders(quick, t1, since=before["generation"], wait=5)["orders"]
    assert (order["id"], order["instance_id"], order["path"]) == (rec["id"], inst["id"], "/root/n")

    r = quick.call("GET", f"/recoveries/{rec['id']}/data")
    assert r.status_code == 409 and "wait until it is done" in r.json()["detail"]
    tar = b"pretend this is a tar" * 100
    bad = _put(quick, t1, rec["id"], tar, "0" * 64)
    assert bad.status_code == 400 and "damaged" in bad.json()["detail"]
    good = _put(quick, t1, rec["id"], tar, hashlib.sha256(tar).hexdigest())
    assert good.status_code == 204, good.text
    done = quick.ok("GET", f"/recoveries/{rec['id']}")
    assert (done["status"], done["size"]) == ("done", len(tar))
    r = quick.call("GET", f"/recoveries/{rec['id']}/data")
    assert r.content == tar and r.headers["x-dockyard-sha256"] == done["sha256"]
    assert _orders(quick, t1)["orders"] == []  # done: no longer asked of the agent
    # another host's agent cannot upload or read it
    assert _put(quick, t2, rec["id"], b"x", "0" * 64).status_code == 404
    assert quick.call("GET", f"/recoveries/{rec['id']}", t2).status_code == 403

    # a day later its files are dropped from the database; the record says so
    with quick.db.session() as s:
        assert recoveries.expire(s, m.now() + recoveries.KEPT_FOR / 2) == 0
        assert recoveries.expire(s, m.now() + recoveries.KEPT_FOR * 1.1) == 1
    assert quick.ok("GET", f"/recoveries/{rec['id']}")["status"] == "expired"
    r = quick.call("GET", f"/recoveries/{rec['id']}/data")
    assert r.status_code == 409 and "ask for it again" in r.json()["detail"]


def test_the_agents_refusal_reaches_the_admin(cloud):
    cloud.catalog()
    t1 = cloud.register("h1")
    inst = _running(cloud, t1, "web")
    cloud.ok("POST", "/instances/web/stop")
    _report(cloud, t1, inst["id"], power_state="shutdown", task_done="powering-off")
    assert cloud.ok("GET", "/instances/web")["status"] == "SHUTOFF"
    rec = cloud.ok("POST", "/instances/web/recoveries", json={"host": "h1", "path": "/etc/x"})
    why = "/etc/x is a symbolic link: recovery does not follow links"
    cloud.ok("POST", f"/agent/recoveries/{rec['id']}/failure", t1, json={"error": why})
    failed = cloud.ok("GET", f"/recoveries/{rec['id']}")
    assert (failed["status"], failed["error"]) == ("error", why)


def test_an_evacuated_instances_old_host_may_be_asked(quick):  # noqa: F811
    quick.catalog()
    t1 = quick.register("h1")
    t2 = quick.register("h2", memory_mb=4096)
    _running(quick, t1, "web")
    _kill(quick, "h1", ("h2", t2))
    quick.ok("POST", "/hosts/h1/evacuate")
    quick.ok("POST", "/agent/hosts/h1/heartbeat", t1)  # back, fenced, data kept
    rec = quick.ok("POST", "/instances/web/recoveries", json={"host": "h1", "path": "/root"})
    assert rec["host"] == "h1"
    [ev] = quick.ok("GET", "/hosts/h1/evacuations")
    quick.ok("POST", f"/migrations/{ev['id']}/release")
    r = quick.call("POST", "/instances/web/recoveries", json={"host": "h1", "path": "/root"})
    assert r.status_code == 409, r.text  # released: nothing kept there any more


def test_a_change_that_queues_no_order_does_not_answer_the_recovery_poll(cloud):
    """Every create moves the host's generation; the agent's recovery poll is held on
    (it has nothing to do) rather than answered with no orders on every spawn."""
    import threading
    import time

    cloud.catalog()
    t1 = cloud.register("h1")
    gen = _orders(cloud, t1)["generation"]
    out: dict = {}

    def poll():
        started = time.monotonic()
        out["answer"] = _orders(cloud, t1, since=gen, wait=2)
        out["took"] = time.monotonic() - started

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.3)
    assert cloud.create("web").status_code == 202  # moves h1's generation
    waiter.join(30)
    assert out["answer"]["orders"] == [] and out["took"] >= 1.9
