"""Root disk size, for real: dockerd's data root on XFS with project quotas.

An XFS file system on a loop device, mounted with pquota, under the test
dockerd's data root: the only setup on which overlay2 can cap a container's
root disk. The agent must notice, and the cap must hold. Skipped (and said
so) where the kernel has no XFS quota support, as on the development machine
of 2026-11-25; elsewhere RootDiskFilter's refusal is tested in tests/api.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.integration.cluster import Cluster, run
from tests.integration.conftest import _can_run

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def xfs_cluster(tmp_path):
    reason = _can_run() or (None if shutil.which("mkfs.xfs") else "needs xfsprogs")
    if reason:
        pytest.skip(reason)
    image = tmp_path / "xfs.img"
    subprocess.run(["truncate", "-s", "3G", str(image)], check=True)
    run("mkfs.xfs", "-q", str(image))
    loop = run("losetup", "--find", "--show", str(image)).stdout.strip()
    c = Cluster()
    data = c.root / "data"
    data.mkdir()
    try:
        mounted = run("mount", "-o", "pquota", loop, str(data), check=False)
        if mounted.returncode != 0:  # e.g. "XFS: quota support not available in this kernel"
            pytest.skip(f"this kernel cannot mount XFS with project quotas: {mounted.stderr}")
        c.start()
        c.cli("network", "create", "net", "--cidr", f"{c.subnet}.0/24", "--bridge", c.bridge)
        c.cli("flavor", "create", "disk1", "--vcpus", "1", "--memory", "128", "--disk", "1")
        tar = c.root / "demo.tar"
        c.cli("image", "build-demo", "--output", str(tar))
        c.cli("image", "import", "demo", "--rootfs", str(tar))
        yield c
    finally:
        c.stop()  # stops dockerd and unmounts what is under its root
        run("umount", str(data), check=False)
        run("losetup", "-d", loop, check=False)


def test_root_disk_size_is_enforced_where_the_host_can(xfs_cluster):
    c = xfs_cluster
    host = c.api("GET", "/hosts/itest")
    assert host["root_disk_quota"] is True
    assert host["labels"]["dockyard.storage"] == "overlay2 on xfs"
    s = c.cli_json(
        "server",
        "create",
        "capped",
        "--image",
        "demo",
        "--flavor",
        "disk1",
        "--network",
        "net",
        "--wait",
    )
    ctr = c.container(s["id"])
    df = ctr.exec_run("df -m /").output.decode().splitlines()[-1].split()
    r = ctr.exec_run("dd if=/dev/zero of=/root/big bs=1M count=1500")
    written = ctr.exec_run("ls -l /root/big").output.decode().split()[4]
    print(
        f"\nroot disk 1 GB: df says {df[1]} MB; dd of 1500 MB stopped at "
        f"{int(written) / 2**20:.0f} MB: {r.output.decode().strip().splitlines()[0]}"
    )
    assert r.exit_code != 0 and int(written) <= 2**30
    assert 900 <= int(df[1]) <= 1100
    c.cli("server", "delete", "capped", "--wait")
