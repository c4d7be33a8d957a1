"""Named volumes on a real host (ext4 image on a loop device) and what an instance cannot do.

Run as root: a private dockerd, server and agent (dockyard.lab.onehost).
"""

from __future__ import annotations

import os
from pathlib import Path

from dockyard import cgroups
from tests.integration.cluster import mounts_under, run, wait_for

MB = 2**20


def _sh(cluster, server, script: str):
    out = cluster.container(server["id"]).exec_run(["sh", "-c", script])
    return out.exit_code, out.output.decode(errors="replace")


def _loops_of(image: Path) -> list[str]:
    return run("losetup", "-n", "-O", "NAME", "-j", str(image)).stdout.split()


def _throttled_devices(pid: int) -> str:
    """The blkio (v1) or io (v2) write limits of the process's cgroup, as the kernel has them."""
    cg = cgroups.of_pid(pid)
    for controller, name in (("blkio", "blkio.throttle.write_bps_device"), ("io", "io.max")):
        try:
            return cg.file(controller, name).read_text()
        except (KeyError, FileNotFoundError, OSError):
            continue
    return ""


def test_a_volume_is_its_size_keeps_its_data_and_leaves_nothing_when_deleted(cluster):
    cluster.cli(
        "flavor", "create", "slowdisk", "--vcpus", "1", "--memory", "128",
        "--disk-write-bps", "20MB",
    )  # fmt: skip
    vol = cluster.cli_json("volume", "create", "data", "--size", "64MB")
    assert (vol["size_mb"], vol["status"], vol["host"]) == (64, "available", None)
    image = cluster.root / "agent" / "volumes" / f"{vol['id']}.img"
    first = cluster.create("vol-a", "--volume", "data:/data", flavor="slowdisk")
    assert cluster.cli_json("volume", "show", "data")["host"] == "itest"

    # writing past the size: ENOSPC inside, nothing outside the 64 MB image
    code, out = _sh(cluster, first, "dd if=/dev/zero of=/data/big bs=1M count=100")
    assert code != 0 and "No space left on device" in out, out
    st = image.stat()
    assert st.st_size == 64 * MB and st.st_blocks * 512 <= 64 * MB
    code, out = _sh(cluster, first, "rm /data/big && echo kept > /data/keep && sync")
    assert code == 0, out

    # the flavor's disk write limit holds on the volume's loop device too
    (loop,) = _loops_of(image)
    rdev = os.stat(loop).st_rdev
    pid = cluster.container(first["id"]).attrs["State"]["Pid"]
    assert f"{os.major(rdev)}:{os.minor(rdev)}" in _throttled_devices(pid)

    # stop, "reboot" (mount and loop device gone), start: the agent attaches it again
    cluster.cli("server", "stop", "vol-a", "--wait")
    run("umount", str(image.parent / vol["id"] / "mnt"))
    run("losetup", "-d", loop)
    cluster.cli("server", "start", "vol-a", "--wait")
    assert _sh(cluster, first, "cat /data/keep") == (0, "kept\n")

    # a second instance after the first is gone finds the data
    r = cluster.cli("volume", "delete", "data", check=False)
    assert r.returncode == 1 and "vol-a" in r.stderr  # attached: refused
    cluster.cli("server", "delete", "vol-a", "--wait")
    second = cluster.create("vol-b", "--volume", "data:/srv/data:ro")
    assert _sh(cluster, second, "cat /srv/data/keep") == (0, "kept\n")
    code, _ = _sh(cluster, second, "touch /srv/data/nope")
    assert code != 0  # mounted read-only

    # delete the instance, then the volume: no loop device, no mount, no file
    cluster.cli("server", "delete", "vol-b", "--wait")
    cluster.cli("volume", "delete", "data")
    wait_for(lambda: not image.exists(), 30, "the agent to remove the volume's image")
    assert _loops_of(image) == []
    assert mounts_under(cluster.root / "agent") == []
    assert list((cluster.root / "agent" / "volumes").iterdir()) == []


def test_an_instance_is_not_privileged_and_cannot_reach_the_kernel(cluster):
    server = cluster.create("jail")
    host_config = cluster.container(server["id"]).attrs["HostConfig"]
    assert host_config["Privileged"] is False
    assert not host_config.get("CapAdd")
    assert not any("unconfined" in opt for opt in host_config.get("SecurityOpt") or [])
    assert not host_config.get("Devices")
    for script in (
        "mount -t tmpfs none /mnt",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        "sysctl -w kernel.shmmax=1024",
        "insmod /lib/modules/dummy.ko",
        "mknod /tmp/sda b 8 0 && head -c 1 /tmp/sda",
    ):
        code, out = _sh(cluster, server, script)
        assert code != 0, f"{script!r} succeeded inside an instance: {out}"
    # the capabilities behind those: sys_admin (21), sys_module (16), net_admin (12),
    # sys_rawio (17) are neither effective nor in the bounding set
    _, status = _sh(cluster, server, "cat /proc/self/status")
    caps = {
        k: int(v, 16)
        for k, v in (ln.split(":\t") for ln in status.splitlines() if ":\t" in ln)
        if k in ("CapEff", "CapBnd")
    }
    for name, bit in (("sys_admin", 21), ("sys_module", 16), ("net_admin", 12), ("sys_rawio", 17)):
        assert not caps["CapEff"] & (1 << bit) and not caps["CapBnd"] & (1 << bit), name
    cluster.cli("server", "delete", "jail", "--wait")
