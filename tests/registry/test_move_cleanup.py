"""What migrations push leaves the registry once they end (db/move_cleanup.py): the
volume copies (``REPO-volumes/<id>:o<order>``) after every move, a move's image once
the instance no longer runs from it (a later move superseded it); the registry
no longer lists them and its garbage collection reclaims their blobs. A real
Distribution; agents played by reports (tests/registry/test_gc.py)."""

from __future__ import annotations

from pathlib import Path

from dockyard.images import distribution
from dockyard.images.registry import (
    MANIFEST_V2,
    Blob,
    Registry,
    image_config,
    manifest,
    sha256_digest,
)
from tests.registry.test_gc import GcCloud, _running, _until, gc_cloud  # noqa: F401


def _push(url: str, repository: str, tag: str, payload: bytes) -> tuple[str, str]:
    """A one-layer image at repository:tag; (manifest digest, layer digest)."""
    layer = Blob(sha256_digest(payload), len(payload))
    config = image_config(layer.digest, None, "2026-11-26T00:00:00Z", "amd64")
    cfg = Blob(sha256_digest(config), len(config))
    body = manifest(cfg, layer)
    with Registry(url) as reg:
        reg._push_blob_bytes(repository, layer, payload)
        reg._push_blob_bytes(repository, cfg, config)
        reg._call("PUT", f"/v2/{repository}/manifests/{tag}", content=body,
                  headers={"Content-Type": MANIFEST_V2}, ok=(201,))  # fmt: skip
    return sha256_digest(body), layer.digest


def _listed(url: str) -> set[tuple[str, str]]:
    with Registry(url) as reg:
        return {(t.repository, t.tag) for t in reg.images()}


def _move(cloud: GcCloud, url: str, inst: dict, n: int, fail: bool = False) -> dict:  # type: ignore[type-arg]
    """Migrate ``inst``; the source "pushes" its image and a volume copy for real."""
    source = cloud.ok("GET", f"/instances/{inst['id']}")["host"]
    mig = cloud.ok("POST", f"/instances/{inst['id']}/migrate", json={})
    order = cloud.desired(source)[inst["id"]]["snapshot"]
    netloc, _, ref = order["push_ref"].partition("/")
    repository, _, tag = ref.rpartition(":")
    digest, layer = _push(url, repository, tag, f"root fs {n}".encode() * 1000)
    volumes = f"{repository}-volumes/v1"
    vol_digest, vol_layer = _push(url, volumes, f"o{n}", f"volume {n}".encode() * 1000)
    copy = {"pull": f"{netloc}/{volumes}@{vol_digest}", "checksum": "sha256:" + "0" * 64}
    done = {"id": mig["id"], "digest": digest, "layers": 1, "volumes": {"v1": copy}}
    cloud.report(inst["id"], source, power_state="shutdown", snapshot=done)
    target = cloud.ok("GET", f"/migrations/{mig['id']}")["target"]
    if fail:
        cloud.report(inst["id"], target, power_state="shutdown", error="no room after all")
    else:
        cloud.report(inst["id"], target, power_state="running", task_done="migrating")
    ended = cloud.ok("GET", f"/migrations/{mig['id']}")
    assert ended["status"] == ("error" if fail else "finished"), ended
    return {"image": (repository, tag), "copy": (volumes, f"o{n}"), "layers": (layer, vol_layer),
            "repository": repository, "volumes": volumes}  # fmt: skip


def test_what_ended_moves_pushed_leaves_the_registry(
    gc_cloud: GcCloud,  # noqa: F811
    primary: distribution.RegistryConfig,
) -> None:
    cloud, url = gc_cloud, primary.url
    checker = cloud.client.app.state.move_checker
    collector = cloud.client.app.state.registry_gc
    collector.stop()  # it stops the registry to collect: it runs once all is deleted
    inst = _running(cloud, "web")

    first = _move(cloud, url, inst, 1)
    checker.check()
    listed = _listed(url)
    assert first["copy"] not in listed  # the target restored it: gone
    assert first["image"] in listed  # web runs from it now: kept

    second = _move(cloud, url, inst, 2)
    checker.check()
    listed = _listed(url)
    assert first["image"] not in listed and second["copy"] not in listed
    assert second["image"] in listed
    images = {i["name"] for i in cloud.ok("GET", "/images", params={"migrations": "true"})}
    assert len([n for n in images if n.startswith("web-migration-")]) == 1
    log = cloud.ok("GET", "/instances/web/actions")
    assert any(a["action"] == "prune" and "(migration)" in (a["message"] or "") for a in log)

    # rolled back after the move: the roll back leaves web's record on the image it
    # moved to (db/move_steps.py), so that one stays and the second goes
    third = _move(cloud, url, inst, 3, fail=True)
    assert cloud.ok("GET", "/instances/web")["image"].startswith("web-migration-")
    checker.check()
    listed = _listed(url)
    assert third["copy"] not in listed and second["image"] not in listed
    assert third["image"] in listed

    assert (cloud.collection() or "").startswith("waiting")  # asked for by the deletes
    collector.start()
    _until(lambda: (cloud.collection() or "").startswith("done"), "no collection", 30)
    with Registry(url) as reg:  # blobs of what went are reclaimed, the kept image's stay
        for gone in (first, second):
            assert not reg.has_blob(gone["repository"], gone["layers"][0])
            assert not reg.has_blob(gone["volumes"], gone["layers"][1])
        assert not reg.has_blob(third["volumes"], third["layers"][1])
        assert reg.has_blob(third["repository"], third["layers"][0])
    assert Path(primary.root).is_dir()
