"""The agent checks an image's SHA-256 before importing it: a damaged tarball never runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.testclient import TestClient

from dockyard import model
from dockyard.compute.client import ServerClient
from dockyard.compute.drivers.fake import FakeDriver
from dockyard.compute.monitor import FakeMeter
from dockyard.compute.plumber import FakePlumber
from dockyard.compute.procfs import FakeViews
from dockyard.compute.reconcile import Step
from dockyard.compute.store import Store
from dockyard.compute.volumes import FakeVolumes
from dockyard.compute.worker import Worker

ROOTFS = b"a rootfs tarball, as uploaded\n" * 1000


class ImportingDriver(FakeDriver):
    """The fake driver, fetching the rootfs to a file first as the Docker driver does."""

    def __init__(self, tmp: Path) -> None:
        super().__init__("h1")
        self.fetched = tmp / "rootfs.tar"
        self.imported: list[bytes] = []

    def ensure_image(self, ref, fetch_rootfs, command):  # type: ignore[no-untyped-def]
        if ref not in self.images and fetch_rootfs is not None:
            fetch_rootfs(self.fetched)
            self.imported.append(self.fetched.read_bytes())
        super().ensure_image(ref, fetch_rootfs, command)


def _agent_client(cloud, token: str) -> ServerClient:
    client = ServerClient("http://testserver", token, "h1")
    client._http = TestClient(
        cloud.client.app,
        base_url="http://testserver/v1",
        headers={"authorization": f"Bearer {token}"},
    )
    return client


def _rootfs_instance(cloud) -> tuple[str, str]:
    cloud.catalog()
    token = cloud.register("h1")
    image = cloud.ok("POST", "/images", json={"name": "fs", "source": "rootfs"})
    up = cloud.ok("PUT", f"/images/{image['id']}/file", content=ROOTFS)
    assert up["sha256"] == hashlib.sha256(ROOTFS).hexdigest()
    assert cloud.create("vm", image="fs").status_code == 202
    return token, image["id"]


def test_a_damaged_image_is_refused_before_import_and_the_instance_says_so(cloud, tmp_path):
    token, image_id = _rootfs_instance(cloud)
    (stored,) = (tmp_path / "images").glob(f"{image_id}.*.tar")
    stored.write_bytes(ROOTFS[:-10] + b"tampered!\n")  # bit rot, or a swapped file
    desired = cloud.ok("GET", "/agent/hosts/h1/desired", token, params={"since": -1, "wait": 0})
    want = model.DesiredInstance.model_validate(desired["instances"][0])
    driver = ImportingDriver(tmp_path)
    worker = Worker(
        driver,
        _agent_client(cloud, token),
        Store(tmp_path / "agent"),
        plumber=FakePlumber(),
        views=FakeViews(),
        meter=FakeMeter(),
        volumes=FakeVolumes(),
    )

    worker.run(Step.spawn, want)

    assert driver.imported == [] and driver.containers == {}  # no docker import, no container
    assert not driver.fetched.exists()  # the bad file is gone
    inst = cloud.ok("GET", "/instances/vm")
    assert inst["status"] == "ERROR"
    assert "damaged" in inst["fault"] and "upload the image again" in inst["fault"]


def test_an_intact_image_is_imported(cloud, tmp_path):
    token, image_id = _rootfs_instance(cloud)
    client = _agent_client(cloud, token)
    dest = tmp_path / "ok.tar"
    client.download_image(image_id, dest, hashlib.sha256(ROOTFS).hexdigest())
    assert dest.read_bytes() == ROOTFS
