"""The server with a registry: uploads are pushed there and hosts pull by digest."""

from __future__ import annotations

import time
from pathlib import Path

from dockyard.images import distribution
from dockyard.images.registry import Registry
from tests.registry.util import free_port, rootfs


def _image(cloud, name="web", command=None):  # type: ignore[no-untyped-def]
    body = {"name": name, "source": "rootfs", **({"command": command} if command else {})}
    return cloud.ok("POST", "/images", json=body)


def test_an_upload_is_pushed_and_its_digest_recorded(
    cloud, primary: distribution.RegistryConfig, tmp_path: Path
) -> None:
    image = _image(cloud, command=["/sbin/init"])
    up = cloud.ok(
        "PUT", f"/images/{image['id']}/file", content=rootfs(tmp_path / "r.tar").read_bytes()
    )
    repo, _, tag = image["ref"].rpartition(":")
    with Registry(primary.url) as reg:
        assert reg.manifest_digest(repo, tag) == up["digest"]
    assert up["status"] == "active" and up["registry_url"] == primary.url
    assert cloud.ok("GET", "/images/web")["digest"] == up["digest"]
    assert not list((tmp_path / "images").glob("*.tar"))  # no tarball kept on the server
    listed = cloud.ok("GET", "/registries/images")
    assert listed["registry"] == primary.url
    [row] = listed["images"]
    assert (row["repository"], row["tag"], row["digest"], row["image"]) == (
        repo,
        tag,
        up["digest"],
        "web",
    )
    assert row["size"] > 0 and row["pushed"]


def test_a_host_gets_its_az_cache_first_then_the_primary(
    cloud, primary: distribution.RegistryConfig, tmp_path: Path
) -> None:
    cloud.catalog()
    image = _image(cloud)
    up = cloud.ok(
        "PUT", f"/images/{image['id']}/file", content=rootfs(tmp_path / "r.tar").read_bytes()
    )
    cache_url = f"http://127.0.0.1:{free_port()}"
    cloud.ok("POST", "/registries", json={"availability_zone": "az1", "url": cache_url})
    assert (
        cloud.call(
            "POST", "/registries", json={"availability_zone": "az1", "url": cache_url}
        ).status_code
        == 409
    )
    token = cloud.register("h1", availability_zone="az1")
    cloud.ok(
        "POST",
        "/instances",
        json={"name": "a", "image": "web", "flavor": "small", "network": "net"},
    )
    [want] = cloud.ok("GET", "/agent/hosts/h1/desired", token)["instances"]
    repo = image["ref"].rpartition(":")[0]
    host = primary.url.removeprefix("http://")
    assert want["image_pulls"] == [
        f"{cache_url.removeprefix('http://')}/{repo}@{up['digest']}",
        f"{host}/{repo}@{up['digest']}",
    ]
    regs = cloud.ok("GET", "/registries")
    assert [(r["availability_zone"], r["primary"]) for r in regs] == [(None, True), ("az1", False)]


def test_delete_removes_the_manifest_and_collects_its_blobs(
    cloud, primary: distribution.RegistryConfig, tmp_path: Path
) -> None:
    image = _image(cloud)
    up = cloud.ok(
        "PUT",
        f"/images/{image['id']}/file",
        content=rootfs(tmp_path / "r.tar", 4 << 20).read_bytes(),
    )
    data = primary.root / "data"
    assert _bytes(data) > 4 << 20
    cloud.ok("DELETE", "/images/web")
    deadline = time.monotonic() + 20  # the collector runs beside the answer: wait for it
    while _bytes(data) > 1 << 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _bytes(data) < 1 << 20, "garbage collection did not reclaim the layer"
    assert distribution.pid(primary) is not None  # and the registry serves again
    repo, _, tag = image["ref"].rpartition(":")
    with Registry(primary.url) as reg:
        assert reg.manifest_digest(repo, tag) is None
    assert up["digest"]


def test_an_unreachable_registry_is_a_503_that_says_so(cloud, tmp_path: Path) -> None:
    cloud.ok(
        "POST",
        "/registries",
        json={"availability_zone": "az9", "url": f"http://127.0.0.1:{free_port()}"},
    )
    r = cloud.call("GET", "/registries/images", params={"az": "az9"})
    assert r.status_code == 503 and "unreachable" in r.json()["detail"]
    r = cloud.call("GET", "/registries/images", params={"az": "nope"})
    assert r.status_code == 404 and "registry add" in r.json()["detail"]


def _bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
