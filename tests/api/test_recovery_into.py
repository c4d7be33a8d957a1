"""``server recover --into INSTANCE:PATH`` (issue 11 item 5's second form), server side
with fake agents: what may be a target (and what is refused, saying why), and the
recovered tar's way from the source host's agent to the target host's agent."""

from __future__ import annotations

import hashlib

import pytest

from tests.api.test_evacuation import _kill, _report, quick  # noqa: F401
from tests.api.test_recovery import _orders, _put
from tests.api.test_roles import _user


def _on(cloud, tokens, name):
    """Create ``name``, report it running from whichever host it was placed on."""
    r = cloud.create(name)
    assert r.status_code == 202, r.text
    inst = r.json()
    host = cloud.ok("GET", f"/instances/{name}")["host"]
    _report(cloud, tokens[host], inst["id"], power_state="running", task_done="spawning")
    return inst, host


def _stop(cloud, tokens, name, host):
    inst = cloud.ok("POST", f"/instances/{name}/stop")
    _report(cloud, tokens[host], inst["id"], power_state="shutdown", task_done="powering-off")


@pytest.fixture
def two(cloud):
    """web stopped (its data readable) and db running, each on some host."""
    cloud.catalog()
    tokens = {"h1": cloud.register("h1"), "h2": cloud.register("h2")}
    web, web_host = _on(cloud, tokens, "web")
    db, db_host = _on(cloud, tokens, "db")
    _stop(cloud, tokens, "web", web_host)
    return cloud, tokens, web_host, db_host


def _recover(cloud, host, path, into_instance, into_path, token=None):
    body = {"host": host, "path": path, "into": {"instance": into_instance, "path": into_path}}
    return cloud.call("POST", "/instances/web/recoveries", token, json=body)


@pytest.mark.parametrize(
    ("path", "into_path", "why"),
    [
        ("/root/n", "/proc", "backed by its host"),
        ("/root/n", "/sys/fs/cgroup", "backed by its host"),
        ("/root/n", "/dev", "backed by its host"),
        ("/etc/hosts", "/etc", "/etc/hosts inside an instance is backed by its host"),
        ("/root/n", "/root/../etc", "no '.' or '..'"),
        ("/root/n", "/root/./x", "no '.' or '..'"),
    ],
)
def test_host_backed_and_unplain_target_paths_are_refused(two, path, into_path, why):
    cloud, _, web_host, _ = two
    r = _recover(cloud, web_host, path, "db", into_path)
    assert r.status_code == 400, r.text
    assert why in r.json()["detail"]


def test_relative_or_empty_target_paths_are_refused_by_the_schema(two):
    cloud, _, web_host, _ = two
    for bad in ("root/x", "", "/a\x00b"):
        assert _recover(cloud, web_host, "/root/n", "db", bad).status_code == 422, bad


def test_the_container_read_from_is_refused_as_a_target(two):
    cloud, _, web_host, _ = two
    r = _recover(cloud, web_host, "/root/n", "web", "/root/restored")
    assert r.status_code == 400, r.text
    assert "is the container the files are read from" in r.json()["detail"]


def test_an_unknown_or_busy_target_is_refused_saying_why(two):
    cloud, tokens, web_host, db_host = two
    r = _recover(cloud, web_host, "/root/n", "nosuch", "/root")
    assert r.status_code == 404 and "dockyard server list" in r.json()["detail"], r.text
    cloud.ok("POST", "/instances/db/stop")  # powering-off: not yet ready to be written
    r = _recover(cloud, web_host, "/root/n", "db", "/root")
    assert r.status_code == 409 and "once it is ACTIVE or SHUTOFF" in r.json()["detail"]


def test_only_admins_recover_into_an_instance(two):
    cloud, _, web_host, _ = two
    member = _user(cloud, "al", "member")
    assert _recover(cloud, web_host, "/root/n", "db", "/root", member).status_code == 403


def test_the_files_go_from_the_source_agent_to_the_target_agent(quick):  # noqa: F811
    quick.catalog()
    tokens = {"h1": quick.register("h1"), "h2": quick.register("h2")}
    _, web_host = _on(quick, tokens, "web")
    db, db_host = _on(quick, tokens, "db")
    _stop(quick, tokens, "web", web_host)
    other = next(h for h in tokens if h != db_host)
    rec = _recover(quick, web_host, "/root/notes", "db", "/srv/restored").json()
    assert (rec["status"], rec["into"]) == ("queued", "db:/srv/restored")

    src = tokens[web_host]
    before = _orders(quick, tokens[db_host], host=db_host)
    assert before["deliveries"] == []
    tar = b"pretend this is a tar" * 50
    digest = hashlib.sha256(tar).hexdigest()
    assert _put(quick, src, rec["id"], tar, digest).status_code == 204
    assert quick.ok("GET", f"/recoveries/{rec['id']}")["status"] == "delivering"
    got = _orders(quick, tokens[db_host], host=db_host, since=before["generation"], wait=5)
    [delivery] = got["deliveries"]
    assert delivery == {
        "id": rec["id"], "instance_id": db["id"], "path": "/srv/restored", "sha256": digest
    }
    # only the target's agent fetches it
    r = quick.call("GET", f"/agent/recoveries/{rec['id']}/data", tokens[other])
    assert r.status_code == 404, r.text
    r = quick.call("GET", f"/agent/recoveries/{rec['id']}/data", tokens[db_host])
    assert r.content == tar and r.headers["x-dockyard-sha256"] == digest
    quick.ok("POST", f"/agent/recoveries/{rec['id']}/delivered", tokens[db_host])
    assert quick.ok("GET", f"/recoveries/{rec['id']}")["status"] == "done"
    assert _orders(quick, tokens[db_host], host=db_host)["deliveries"] == []


def test_the_target_agents_refusal_reaches_the_admin(two):
    cloud, tokens, web_host, db_host = two
    rec = _recover(cloud, web_host, "/root/notes", "db", "/root").json()
    tar = b"t" * 10
    _put(cloud, tokens[web_host], rec["id"], tar, hashlib.sha256(tar).hexdigest())
    why = "/root/notes already exists in the instance"
    cloud.ok("POST", f"/agent/recoveries/{rec['id']}/failure", tokens[db_host],
             json={"error": why})  # fmt: skip
    failed = cloud.ok("GET", f"/recoveries/{rec['id']}")
    assert failed["status"] == "error"
    assert failed["error"] == f"writing into db:/root: {why}"


def test_an_evacuated_instance_takes_back_what_its_old_host_kept(quick):  # noqa: F811
    """Not the same container: the one on the dead host is fenced, the instance runs
    elsewhere, and its files may be recovered into it."""
    quick.catalog()
    t1 = quick.register("h1")
    t2 = quick.register("h2", memory_mb=4096)
    tokens = {"h1": t1, "h2": t2}
    _, old = _on(quick, tokens, "web")
    alive = next(h for h in tokens if h != old)
    _kill(quick, old, (alive, tokens[alive]))
    quick.ok("POST", f"/hosts/{old}/evacuate")
    iid = quick.ok("GET", "/instances/web")["id"]
    _report(quick, tokens[alive], iid, power_state="running", task_done="spawning")
    quick.ok("POST", f"/agent/hosts/{old}/heartbeat", tokens[old])  # back, fenced
    rec = _recover(quick, old, "/root/work", "web", "/root/back")
    assert rec.status_code == 202, rec.text
    assert rec.json()["into"] == "web:/root/back"
