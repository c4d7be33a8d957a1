"""The driver's part of the PaaS contract, against the fake and a real dockerd: a
container's environment and rebuild_seq, config files written before its first start
(never through a link out of its root fs), commands run inside (health checks).
"""

from __future__ import annotations

import tarfile
import uuid
from pathlib import Path

import pytest

from dockyard.compute.driver import ExecResult, FileSpec
from dockyard.errors import PermanentError
from dockyard.images import rootfs, tarball
from tests.drivers.test_contract import IMAGE, dockerd, driver, spec

__all__ = ["dockerd", "driver"]  # the contract suite's fixtures, used here too

HOSTILE = "dockyard-test/hostile:2"
LINKED = "dockyard-escape-by-file-link"  # the image's /etc/app.conf points at the host's /tmp


def _hostile_rootfs(dest: Path) -> None:
    """busybox, plus links a tenant's image may hold: to the host's / and above it."""
    rootfs.build(dest)
    with tarfile.open(dest, "a") as tar:
        tarball.add_symlink(tar, "conf", "/")
        tarball.add_symlink(tar, "up", "../../../../../..")
        tarball.add_dir(tar, "app", 0o755)
        tarball.add_symlink(tar, "app/etc", "../../../../../../tmp")
        tarball.add_symlink(tar, "etc/app.conf", f"../../../../../../tmp/{LINKED}")


def _cat(driver, iid: str, path: str) -> ExecResult:
    return driver.exec(iid, ["cat", path], timeout=10)


def test_env_and_rebuild_seq_are_kept_by_the_container(driver):
    s = spec(env={"APP_MODE": "blue", "GREETING": "hello world"}, rebuild_seq=7)
    made = driver.create(s)
    running = driver.start(s.instance_id)
    assert made.rebuild_seq == running.rebuild_seq == 7
    assert [o.rebuild_seq for o in driver.list()] == [7]
    assert made.container_id and made.container_id == running.container_id
    if type(driver).__name__ == "DockerDriver":  # PID 1's environment: what init passes on
        env = driver.exec(s.instance_id, ["cat", "/proc/1/environ"], timeout=10).output
        assert "APP_MODE=blue" in env and "GREETING=hello world" in env


def test_files_are_written_before_the_first_start_with_their_modes(driver):
    s = spec()
    driver.create(s)
    driver.put_files(
        s.instance_id,
        [
            FileSpec("/etc/app/app.conf", b"port=8080\n", 0o600),
            FileSpec("/srv/new/dir/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        ],
    )
    driver.start(s.instance_id)
    if type(driver).__name__ != "DockerDriver":
        return
    assert _cat(driver, s.instance_id, "/etc/app/app.conf").output == "port=8080\n"
    listing = driver.exec(s.instance_id, ["ls", "-l", "/etc/app/app.conf"], 10).output
    assert listing.startswith("-rw-------")
    assert driver.exec(s.instance_id, ["/srv/new/dir/run.sh"], 10).output == "hi\n"


@pytest.mark.root
def test_links_in_the_image_never_lead_a_file_out_of_the_container(request, tmp_path):
    from dockyard.compute.drivers.docker import DockerDriver

    d = DockerDriver("h1", request.getfixturevalue("dockerd").url)
    d.ensure_image(HOSTILE, _hostile_rootfs, ["/sbin/init"])
    marker = f"dockyard-escape-{uuid.uuid4().hex[:8]}"
    s = spec(image_ref=HOSTILE)
    try:
        d.create(s)
        d.put_files(
            s.instance_id,
            [
                FileSpec(f"/conf/{marker}", b"x\n"),
                FileSpec(f"/up/{marker}", b"y\n"),
                FileSpec(f"/app/etc/{marker}", b"z\n"),
                FileSpec("/etc/app.conf", b"w\n"),
            ],
        )
        d.start(s.instance_id)
        # nothing outside: not at the host's /, not at its /tmp
        assert not Path("/", marker).exists() and not Path("/tmp", marker).exists()
        assert not Path("/tmp", LINKED).exists()
        # inside: each link resolved within the container's own root
        assert _cat(d, s.instance_id, f"/{marker}").output == "y\n"  # / then up: both root
        assert _cat(d, s.instance_id, f"/tmp/{marker}").output == "z\n"
        assert _cat(d, s.instance_id, "/etc/app.conf").output == "w\n"
    finally:
        d.destroy(s.instance_id)
        for leak in (Path("/", marker), Path("/tmp", marker)):
            leak.unlink(missing_ok=True)


def test_exec_gives_the_exit_code_and_output(driver):
    s = spec()
    driver.create(s)
    if type(driver).__name__ != "DockerDriver":
        driver.exec_handler = lambda iid, cmd: ExecResult(3, "no")
    with pytest.raises(PermanentError):
        driver.exec(s.instance_id, ["true"], timeout=5)  # not running yet
    driver.start(s.instance_id)
    result = driver.exec(s.instance_id, ["sh", "-c", "echo no; exit 3"], timeout=10)
    assert (result.exit_code, result.output.strip()) == (3, "no")


def test_files_into_a_missing_container_are_refused(driver):
    with pytest.raises(PermanentError):
        driver.put_files(str(uuid.uuid4()), [FileSpec("/etc/a", b"")])



@pytest.mark.root
def test_a_config_file_over_a_directory_is_refused_and_the_mounted_host_data_survives(
    request, tmp_path
):
    """A file at a volume's mount point (or at /bin) used to make dockerd remove the
    directory, through the mount the host's files in it."""
    from dockyard.compute.driver import Mount
    from dockyard.compute.drivers.docker import DockerDriver

    d = DockerDriver("h1", request.getfixturevalue("dockerd").url)
    d.ensure_image(IMAGE, lambda dest: rootfs.build(dest), ["/sbin/init"])
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "keep").write_text("precious\n")
    (data / "sub" / "deep").write_text("also\n")
    s = spec(mounts=[Mount(str(data), "/data")])
    try:
        d.create(s)
        for path in ("/data", "/bin", "/data/sub"):
            with pytest.raises(PermanentError, match="refused the config files"):
                d.put_files(s.instance_id, [FileSpec(path, b"x\n")])
        assert (data / "keep").read_text() == "precious\n"
        assert (data / "sub" / "deep").read_text() == "also\n"
        d.start(s.instance_id)
        assert _cat(d, s.instance_id, "/data/keep").output == "precious\n"
        assert d.exec(s.instance_id, ["/bin/true"], 10).exit_code == 0  # /bin still there
    finally:
        d.destroy(s.instance_id)


@pytest.mark.root
def test_exec_keeps_a_tail_of_a_flood_kills_what_times_out_and_leaks_no_socket(request):
    import gc
    import os
    import tracemalloc

    from dockyard.compute.drivers.docker import DockerDriver
    from dockyard.errors import TemporaryError

    d = DockerDriver("h1", request.getfixturevalue("dockerd").url)
    d.ensure_image(IMAGE, lambda dest: rootfs.build(dest), ["/sbin/init"])
    s = spec()
    gc.disable()
    try:
        d.create(s)
        d.start(s.instance_id)
        iid = s.instance_id
        tracemalloc.start()
        flood = d.exec(iid, ["sh", "-c", "yes | head -c 30000000; echo END"], timeout=60)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert flood.exit_code == 0 and flood.output.endswith("y\nEND\n")
        assert len(flood.output) <= 4096
        assert peak < 4 * 2**20  # was the whole 30 MB, and more
        with pytest.raises(TemporaryError, match="did not end within"):
            d.exec(iid, ["sleep", "317"], timeout=1)
        left = d.exec(iid, ["ps"], timeout=10).output
        assert "sleep 317" not in left  # killed, not left to pile up inside
        counts = []
        for _ in range(3):
            for _ in range(20):
                d.exec(iid, ["true"], timeout=10)
            counts.append(len(os.listdir("/proc/self/fd")))
        assert counts[2] <= counts[0], counts  # no socket left per exec (gc is not asked)
    finally:
        gc.enable()
        d.destroy(s.instance_id)
