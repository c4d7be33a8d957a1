"""A snapshot is its project's own: another tenant can neither see, show, boot from nor
delete it (404, as if absent), its owner can; names never collide with public ones;
admins see every project's; a `snapshots` quota; public images unchanged."""

from __future__ import annotations

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import text

from dockyard.db.session import Database, alembic_config
from tests.api import test_moves_cli
from tests.api.test_moves import DIGEST, PROBLEM, Moves, _cloud
from tests.api.test_moves_cli import FakeAgents

PUBLIC = {"project": None, "kind": "public"}
served = test_moves_cli.served  # a real server and fake agents, for the CLI


@pytest.fixture
def two(tmp_path, backend_db):
    """Projects pa (alice, member; rita, reader) and pb (bob, member), two hosts."""
    _, app, token = _cloud(tmp_path, db=backend_db)
    with TestClient(app) as client:
        cloud = Moves(client, token)
        cloud.catalog()
        cloud.agents = {h: cloud.register(h) for h in ("h1", "h2")}
        for project in ("pa", "pb"):
            cloud.ok("POST", "/projects", json={"name": project})
        cloud.alice = _user(cloud, "alice", "pa")
        cloud.rita = _user(cloud, "rita", "pa", "reader")
        cloud.bob = _user(cloud, "bob", "pb")
        yield cloud


def _user(cloud, name, project, role="member"):
    body = {"name": name, "project": project, "role": role}
    return cloud.ok("POST", "/users", json=body)["token"]


def _snap(cloud, token, server, name):
    """Snapshot ``server`` as ``name`` and play the agent's report: the image is active."""
    inst = cloud.ok("GET", f"/instances/{server}", token)
    r = cloud.call("POST", f"/instances/{server}/snapshot", token, json={"image": name})
    assert r.status_code == 202, r.text
    done = {"id": r.json()["id"], "digest": DIGEST, "layers": 3}
    r2 = cloud.report(inst["id"], inst["host"], power_state="running", snapshot=done)
    assert r2.status_code == 204, r2.text
    image = cloud.ok("GET", f"/images/{r.json()['id']}", token)
    assert image["status"] == "active"
    return image


def _names(cloud, token, query=""):
    return {i["name"]: i for i in cloud.ok("GET", f"/images{query}", token)}


def _absent(r, key):
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert repr(key) in r.json()["detail"] and "does not exist" in r.json()["detail"]


def test_another_tenant_cannot_see_show_boot_from_or_delete_a_snapshot(two):
    two.running("web", token=two.alice)
    golden = _snap(two, two.alice, "web", "golden")
    assert (golden["project"], golden["kind"]) == ("pa", "snapshot")
    assert "golden" not in _names(two, two.bob)
    for key in ("golden", golden["id"]):
        _absent(two.call("GET", f"/images/{key}", two.bob), key)
        _absent(two.call("GET", f"/images/{key}/file", two.bob), key)
        _absent(two.call("DELETE", f"/images/{key}", two.bob), key)
        _absent(two.create("stolen", two.bob, image=key), key)
    # nothing of it changed, and bob got no instance
    assert two.ok("GET", "/images/golden")["status"] == "active"
    assert two.ok("GET", "/instances", two.bob) == []
    # the owner's project sees it, its reader too; the admin sees it with its project
    assert _names(two, two.alice)["golden"]["id"] == golden["id"]
    assert two.ok("GET", "/images/golden", two.rita)["id"] == golden["id"]
    assert _names(two, two.admin)["golden"]["project"] == "pa"


def test_the_owner_boots_from_its_snapshot_and_deletes_it(two):
    two.running("web", token=two.alice)
    golden = _snap(two, two.alice, "web", "golden")
    copy = two.running("copy", token=two.alice, image="golden")
    assert copy["image"] == "golden" and copy["status"] == "ACTIVE"
    want = two.desired(copy["host"])[0][copy["id"]]
    assert want["image_pulls"] == [f"198.18.0.2:5000/dockyard/golden@{DIGEST}"]
    # in use: refused; a reader may not; once unused, the owner deletes it
    r = two.call("DELETE", "/images/golden", two.alice)
    assert r.status_code == 409 and "copy" in r.json()["detail"]
    r = two.call("DELETE", "/images/golden", two.rita)
    assert r.status_code == 403 and "readers cannot delete images" in r.json()["detail"]
    spare = _snap(two, two.alice, "web", "spare")
    assert two.call("DELETE", "/images/spare", two.alice).status_code == 204
    _absent(two.call("GET", f"/images/{spare['id']}"), spare["id"])
    assert set(_names(two, two.admin)) == {"img", "golden"}
    assert two.ok("GET", "/images/golden")["id"] == golden["id"]


def test_public_images_are_unchanged_for_everyone_and_only_admins_delete_them(two):
    two.running("web", token=two.alice)
    _snap(two, two.alice, "web", "golden")
    for token in (two.alice, two.rita, two.bob, two.admin):
        img = two.ok("GET", "/images/img", token)
        assert {k: img[k] for k in PUBLIC} == PUBLIC and img["ref"] == "bb:latest"
        assert "img" in _names(two, token)
    bobs = two.running("bobs", token=two.bob)
    assert bobs["image"] == "img"
    r = two.call("DELETE", "/images/img", two.alice)
    assert r.status_code == 403 and "public" in r.json()["detail"]
    assert r.headers["content-type"].startswith(PROBLEM)
    assert two.ok("GET", "/images/img", two.bob)["id"]


def test_names_never_collide_with_public_ones_nor_within_a_project(two):
    two.running("web", token=two.alice)
    two.running("bweb", token=two.bob)
    r = two.call("POST", "/instances/web/snapshot", two.alice, json={"image": "img"})
    assert r.status_code == 409 and "a public image named 'img' already exists" in r.text
    alices = _snap(two, two.alice, "web", "golden")
    r = two.call("POST", "/instances/web/snapshot", two.alice, json={"image": "golden"})
    assert r.status_code == 409 and "an image of this project named 'golden'" in r.text
    assert two.ok("GET", "/instances/web", two.alice)["task_state"] is None
    # another project's names are not looked at (nor told): bob has his own golden
    bobs = _snap(two, two.bob, "bweb", "golden")
    assert two.ok("GET", "/images/golden", two.alice)["id"] == alices["id"]
    assert two.ok("GET", "/images/golden", two.bob)["id"] == bobs["id"]
    # the admin sees both; by name it is ambiguous and says to use the id
    r = two.call("GET", "/images/golden")
    assert r.status_code == 409 and "give the id" in r.json()["detail"]
    assert alices["id"] in r.json()["detail"] and bobs["id"] in r.json()["detail"]
    assert two.ok("GET", f"/images/{bobs['id']}")["project"] == "pb"
    assert [i["project"] for i in two.ok("GET", "/images") if i["name"] == "golden"] in (
        ["pa", "pb"],
        ["pb", "pa"],
    )
    # a public name may not be taken over a project's either
    r = two.call("POST", "/images", json={"name": "golden", "source": "docker", "ref": "x:1"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    assert len([i for i in two.ok("GET", "/images") if i["name"] == "golden"]) == 2


def test_a_snapshot_past_the_projects_quota_is_refused_saying_what_to_do(two):
    two.running("web", token=two.alice)
    two.ok("PATCH", "/projects/pa/quota", json={"snapshots": 1})
    _snap(two, two.alice, "web", "s1")
    r = two.call("POST", "/instances/web/snapshot", two.alice, json={"image": "s2"})
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["quota"] == "snapshots" and (body["limit"], body["used"]) == (1, 1)
    assert "dockyard image delete" in body["detail"] and "quota set pa --snapshots" in body[
        "detail"
    ]
    assert "s2" not in _names(two, two.alice)
    assert two.ok("GET", "/instances/web", two.alice)["task_state"] is None
    usage = two.ok("GET", "/quota", two.alice)["resources"]["snapshots"]
    assert usage == {"limit": 1, "used": 1}
    # another project is not counted against it; freeing one makes room
    two.running("bweb", token=two.bob)
    _snap(two, two.bob, "bweb", "b1")
    two.ok("DELETE", "/images/s1", two.alice)
    _snap(two, two.alice, "web", "s2")
    assert two.ok("GET", "/quota", two.alice)["resources"]["snapshots"]["used"] == 1


def test_a_migration_image_is_the_projects_listed_only_when_asked_and_not_counted(two):
    inst = two.running("web", token=two.alice)
    mig = two.ok("POST", "/instances/web/migrate", json={})
    image = two.ok("GET", f"/images/{mig['id']}")
    assert (image["project"], image["kind"]) == ("pa", "migration")
    assert image["name"] not in _names(two, two.alice)
    assert _names(two, two.alice, "?migrations=true")[image["name"]]["kind"] == "migration"
    assert image["name"] not in _names(two, two.bob, "?migrations=true")
    _absent(two.call("GET", f"/images/{mig['id']}", two.bob), mig["id"])
    assert two.ok("GET", "/quota", two.alice)["resources"]["snapshots"]["used"] == 0
    r = two.call("DELETE", f"/images/{mig['id']}", two.alice)
    assert r.status_code == 409 and "delete it once the migration has ended" in r.text
    assert two.migration(mig["id"])["status"] == "snapshotting"
    # once moved, the instance runs from it and its owner can still show it by name
    done = {"id": mig["id"], "digest": DIGEST, "layers": 3}
    two.report(inst["id"], inst["host"], power_state="shutdown", snapshot=done)
    target = two.migration(mig["id"])["target"]
    two.report(inst["id"], target, power_state="running", task_done="migrating")
    assert two.ok("GET", "/instances/web", two.alice)["image"] == image["name"]
    assert two.ok("GET", f"/images/{image['name']}", two.alice)["status"] == "active"


def test_the_upgrade_gives_existing_snapshots_to_their_instances_project(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    command.upgrade(alembic_config(url), "0018")
    db = Database(url)
    with db.engine.begin() as c:
        c.execute(text("INSERT INTO projects (id, name) VALUES ('p', 'pa')"))
        _insert(c, "instances", id="i", name="web", project_id="p")
        for iid, name, of in (("a", "img", None), ("b", "golden", "i")):
            c.execute(
                text(
                    "INSERT INTO images (id, name, source, ref, status, key_processes, "
                    "procview, created_at, snapshot_of) VALUES (:id, :name, 'docker', 'r', "
                    "'active', '[]', 1, CURRENT_TIMESTAMP, :of)"
                ),
                {"id": iid, "name": name, "of": of},
            )
    db.migrate()
    with db.engine.connect() as c:
        rows = dict(c.execute(text("SELECT name, project_id FROM images")).all())
    assert rows == {"img": None, "golden": "p"}
    db.engine.dispose()


def _insert(c, table, **values):
    """A row with ``values`` and a filler in every other NOT NULL column (SQLite)."""
    for _, col, kind, notnull, default, pk in c.execute(text(f"PRAGMA table_info({table})")):
        if notnull and default is None and not pk and col not in values:
            values[col] = 0 if "INT" in kind or "BOOL" in kind else "x"
    cols = ", ".join(values)
    c.execute(text(f"INSERT INTO {table} ({cols}) VALUES (:{', :'.join(values)})"), values)


def test_the_cli_lists_owners_hides_migration_images_and_sets_the_snapshot_quota(
    served, capsys
):
    from dockyard.cli.main import main

    url, tokens = served
    agents = FakeAgents(url, tokens)
    agents.start()
    try:
        main(["quota", "set", "admin", "--snapshots", "1"])
        assert "snapshots" in capsys.readouterr().out
        main(["server", "snapshot", "web", "--image", "golden", "--wait"])
        main(["server", "migrate", "db", "--wait"])
        capsys.readouterr()
        with pytest.raises(SystemExit) as refused:
            main(["server", "snapshot", "web", "--image", "again"])
    finally:
        agents.done.set()
        agents.join()
    assert refused.value.code != 0
    assert "quota set admin --snapshots" in capsys.readouterr().err
    main(["image", "list"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0][:3] == ["NAME", "OWNER", "SOURCE"]
    assert {r[0]: r[1] for r in rows[1:]} == {"golden": "admin", "img": "public"}
    main(["image", "list", "--migrations"])
    out = capsys.readouterr().out
    assert "db-migration-" in out and "admin (migration)" in out
    main(["quota", "show"])
    quota = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert quota["snapshots"] == ["1", "1"]
