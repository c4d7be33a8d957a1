"""Garbage collection never races a push (db/registry_gc.py): a real Distribution
beside the server, agents played by reports on the agent API."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dockyard.api.app import create_app
from dockyard.api.registry import GarbageCollector, RegistrySettings
from dockyard.api.server import init
from dockyard.db import registry_gc
from dockyard.db.session import Database
from dockyard.errors import PermanentError
from dockyard.images import distribution
from dockyard.images.registry import (
    MANIFEST_V2,
    Blob,
    Registry,
    image_config,
    manifest,
    sha256_digest,
)
from tests.api.conftest import Cloud, _database
from tests.registry.util import rootfs

DIGEST = "sha256:" + "ab" * 32


class GcCloud(Cloud):
    db: Database
    agents: dict[str, str]

    def report(self, inst_id: str, host: str, **body: object) -> None:
        r = self.call("PUT", f"/agent/instances/{inst_id}/state", self.agents[host], json=body)
        assert r.status_code == 204, r.text

    def desired(self, host: str) -> dict[str, dict]:  # type: ignore[type-arg]
        state = self.ok("GET", f"/agent/hosts/{host}/desired", self.agents[host])
        return {i["id"]: i for i in state["instances"]}

    def collection(self) -> str | None:
        [primary] = [r for r in self.ok("GET", "/registries") if r["primary"]]
        found: str | None = primary["garbage_collection"]
        return found


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def gc_cloud(
    request: pytest.FixtureRequest, tmp_path: Path, primary: distribution.RegistryConfig
) -> Iterator[GcCloud]:
    db, drop = _database(tmp_path, request.param)
    token = init(db)
    settings = RegistrySettings(primary.url, primary.root)
    app = create_app(db, tmp_path, registry=settings, registry_gc_every=0.2)
    with TestClient(app) as client:
        cloud = GcCloud(client, token)
        cloud.db = db
        cloud.catalog()
        cloud.agents = {h: cloud.register(h) for h in ("h1", "h2")}
        yield cloud
    db.engine.dispose()
    if drop:
        drop()


def _bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _until(cond: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _uploaded(cloud: GcCloud, tmp_path: Path, name: str) -> dict:  # type: ignore[type-arg]
    image = cloud.ok("POST", "/images", json={"name": name, "source": "rootfs"})
    body = rootfs(tmp_path / f"{name}.tar", 4 << 20).read_bytes()
    return cloud.ok("PUT", f"/images/{image['id']}/file", content=body)  # type: ignore[no-any-return]


def _running(cloud: GcCloud, name: str) -> dict:  # type: ignore[type-arg]
    r = cloud.create(name)
    assert r.status_code == 202, r.text
    inst = r.json()
    cloud.report(inst["id"], inst["host"], power_state="running", task_done="spawning")
    return cloud.ok("GET", f"/instances/{name}")  # type: ignore[no-any-return]


def test_an_image_deletes_collection_waits_for_a_migrations_push_and_pull_then_runs(
    gc_cloud: GcCloud, primary: distribution.RegistryConfig, tmp_path: Path
) -> None:
    cloud, data = gc_cloud, primary.root / "data"
    _uploaded(cloud, tmp_path, "old")
    inst = _running(cloud, "web")
    mig = cloud.ok("POST", "/instances/web/migrate", json={})
    assert cloud.desired(inst["host"])[inst["id"]]["snapshot"]["id"] == mig["id"]
    registry_pid = distribution.pid(primary)
    cloud.ok("DELETE", "/images/old")
    _until(lambda: (cloud.collection() or "").startswith("waiting"), "no postponed collection")
    time.sleep(1.5)  # several of the collector's passes
    assert cloud.collection() == "waiting until a migration of web ends"
    assert distribution.pid(primary) == registry_pid, "the registry was stopped during a push"
    assert _bytes(data) > 4 << 20  # nothing collected yet
    assert cloud.desired(inst["host"])[inst["id"]]["snapshot"]["id"] == mig["id"]
    done = {"id": mig["id"], "digest": DIGEST, "layers": 3, "size": 1000}
    cloud.report(inst["id"], inst["host"], power_state="shutdown", snapshot=done)
    target = cloud.ok("GET", f"/migrations/{mig['id']}")["target"]
    time.sleep(0.6)  # the target pulls what was pushed: still no collection
    assert cloud.collection() == "waiting until a migration of web ends"
    cloud.report(inst["id"], target, power_state="running", task_done="migrating")
    assert cloud.ok("GET", f"/migrations/{mig['id']}")["status"] == "finished"  # not failed
    _until(lambda: (cloud.collection() or "").startswith("done"), "no collection after the move")
    assert _bytes(data) < 1 << 20, "the deleted image's layer was not reclaimed"
    assert distribution.pid(primary) is not None


def test_no_snapshot_order_goes_out_while_a_collection_runs(gc_cloud: GcCloud) -> None:
    """The window opens before the check: a snapshot asked for during a collection
    waits for its end, and its host is woken then."""
    cloud = gc_cloud
    cloud.client.app.state.registry_gc.stop()  # this test plays the collector
    inst = _running(cloud, "web")
    url = cloud.ok("GET", "/registries")[0]["url"]
    with cloud.db.session() as s:
        registry_gc.request(s, url)
    with cloud.db.session() as s:
        since = registry_gc.open_window(s, url)
    assert since is not None
    image = cloud.ok("POST", "/instances/web/snapshot", json={"image": "snap"})
    assert cloud.desired(inst["host"])[inst["id"]]["snapshot"] is None
    generation = cloud.ok("GET", f"/agent/hosts/{inst['host']}/desired", cloud.agents["h1"])
    with cloud.db.session() as s:
        assert registry_gc.pushes(s) == ["a snapshot of web"]
        woken = registry_gc.finish(s, url, since)
    assert woken == [inst["host"]]
    after = cloud.ok("GET", f"/agent/hosts/{inst['host']}/desired", cloud.agents[inst["host"]])
    assert after["generation"] > generation["generation"]
    [want] = [i for i in after["instances"] if i["id"] == inst["id"]]
    assert want["snapshot"]["id"] == image["id"]


def test_a_blob_pushed_before_a_collection_and_its_manifest_after_are_kept(
    tmp_path: Path, primary: distribution.RegistryConfig
) -> None:
    """The race itself, made deterministic: a server's push holds the gate, so the
    collection asked for between its blob and its manifest waits for the manifest."""
    db = Database(f"sqlite:///{tmp_path}/gc.db")
    init(db)
    settings = RegistrySettings(primary.url, primary.root)
    collector = GarbageCollector(db, _Watch(), settings)  # type: ignore[arg-type]
    layer = b"a layer pushed just before a collection"
    blob = Blob(sha256_digest(layer), len(layer))
    config = image_config(blob.digest, None, "2026-11-26T00:00:00Z", "amd64")
    cfg_blob = Blob(sha256_digest(config), len(config))
    with Registry(primary.url) as reg:  # ungated, the race loses the push
        reg._push_blob_bytes("bare/web", blob, layer)
        reg._push_blob_bytes("bare/web", cfg_blob, config)
    distribution.garbage_collect(primary)
    with Registry(primary.url) as reg, pytest.raises(PermanentError, match="BLOB_UNKNOWN"):
        body, kind = manifest(cfg_blob, blob), {"Content-Type": MANIFEST_V2}
        reg._call("PUT", "/v2/bare/web/manifests/v1", content=body, headers=kind, ok=(201,))
    with collector.gate.pushing(), Registry(primary.url) as reg:
        reg._push_blob_bytes("race/web", blob, layer)
        reg._push_blob_bytes("race/web", cfg_blob, config)
        collector.request()
        assert collector.collect() == "postponed: an image import (pushed by a server)"
        body, kind = manifest(cfg_blob, blob), {"Content-Type": MANIFEST_V2}
        reg._call("PUT", "/v2/race/web/manifests/v1", content=body, headers=kind, ok=(201,))
    assert collector.collect() == "collected"
    with Registry(primary.url) as reg:
        assert reg.manifest_digest("race/web", "v1") is not None
        assert reg.has_blob("race/web", blob.digest), "the collection swept a pushed blob"
    db.engine.dispose()


class _Watch:
    def notify(self, host: str) -> None:
        pass


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def gate_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    db, drop = _database(tmp_path, request.param)
    yield db
    db.engine.dispose()
    if drop:
        drop()


def test_a_servers_push_waits_while_a_collection_holds_the_gate(gate_db: Database) -> None:
    """On PostgreSQL the gate is an advisory lock: two gates (two servers) see each other."""
    db = gate_db
    other = registry_gc.PushGate(db, "http://127.0.0.1:5000/")
    gate = registry_gc.PushGate(db, "http://127.0.0.1:5000")
    pushed = threading.Event()

    def push() -> None:
        with gate.pushing():
            pushed.set()

    with other.collecting() as free:
        assert free
        t = threading.Thread(target=push)
        t.start()
        assert not pushed.wait(0.3), "a push went ahead during a collection"
    assert pushed.wait(5)
    t.join()
    with gate.pushing(), other.collecting() as free:
        assert not free


def test_a_postponed_collection_checked_again_still_reads_waiting(gc_cloud: GcCloud) -> None:
    """Each pass opens the window, then checks for pushes: while it checks a postponed
    collection again, `registry list` said "running since" (and a test reading it
    then failed in CI). It says waiting until the check passes and it runs."""
    cloud = gc_cloud
    cloud.client.app.state.registry_gc.stop()  # this test plays the collector
    url = cloud.ok("GET", "/registries")[0]["url"]
    with cloud.db.session() as s:
        registry_gc.request(s, url)
    with cloud.db.session() as s:
        registry_gc.open_window(s, url)
    assert cloud.collection().startswith("running since")  # the first check
    with cloud.db.session() as s:
        registry_gc.postpone(s, url, "a migration of web")
    with cloud.db.session() as s:
        since = registry_gc.open_window(s, url)  # checked again
    assert cloud.collection() == "waiting until a migration of web ends"
    with cloud.db.session() as s:
        registry_gc.begin(s, url)  # nothing pushes now: it runs
    assert cloud.collection().startswith("running since")
    with cloud.db.session() as s:
        assert since is not None
        registry_gc.finish(s, url, since)
    assert cloud.collection().startswith("done")
