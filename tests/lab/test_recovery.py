"""Offline data recovery on a real lab host (issue 11 item 5): files written inside an
instance (its root filesystem and a named volume) are recovered byte for byte after
its host's dockerd has been stopped for good, read off the disk by the host's agent."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.lab import lab as labs
from tests.lab.conftest import LabRun, running_lab
from tests.lab.test_lab import docker_on

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def one_host() -> Iterator[LabRun]:
    with running_lab("--hosts", "1") as run:
        yield run


def _exec(lab: LabRun, host: str, container: str, script: str) -> str:
    out = docker_on(lab, host, "exec", container, "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_files_are_recovered_byte_for_byte_from_a_host_whose_dockerd_is_gone(
    one_host: LabRun,
) -> None:
    lab = one_host
    lab.cli("volume", "create", "keep", "--size", "64MB")
    inst = lab.cli_json(
        "server", "create", "pet", "--image", "demo", "--flavor", "small", "--network", "lab",
        "--volume", "keep:/data", "--wait",
    )  # fmt: skip
    assert inst["status"] == "ACTIVE", inst
    write = (
        "mkdir -p /root/work && dd if=/dev/urandom of=/root/work/secret.bin bs=1024 count=700 "
        "2>/dev/null && dd if=/dev/urandom of=/data/vol.bin bs=1024 count=300 2>/dev/null && "
        "sync && sha256sum /root/work/secret.bin /data/vol.bin"
    )
    sums = {
        Path(path).name: digest
        for digest, path in (
            line.split() for line in _exec(lab, "lab1", f"dy-{inst['id']}", write).splitlines()
        )
    }
    lab.cli("server", "stop", "pet", "--wait")
    state = labs.Lab.load(lab.state)
    state.host("lab1").stop_dockerd()  # for good: the agent stays, dockerd does not answer
    state.save()

    with tempfile.TemporaryDirectory(prefix="dy-recovered-") as out:
        for path in ("/root/work/secret.bin", "/data/vol.bin"):
            r = lab.cli("server", "recover", "pet", "--host", "lab1", "--path", path, "--to", out)
            assert "recovered" in r.stdout, r
            got = hashlib.sha256((Path(out) / Path(path).name).read_bytes()).hexdigest()
            assert got == sums[Path(path).name], path
        whole = lab.cli("server", "recover", "pet", "--host", "lab1", "--path", "/root/work",
                        "--to", f"{out}/dir")  # fmt: skip
        assert "recovered" in whole.stdout
        assert (Path(out) / "dir" / "work" / "secret.bin").stat().st_size == 700 * 1024
    # a file the image brought and the instance never changed is not in its writable layer
    r = lab.cli("server", "recover", "pet", "--host", "lab1", "--path", "/bin/busybox",
                "--to", "/nonexistent-dy", check=False)  # fmt: skip
    assert r.returncode == 1 and "never wrote it" in r.stderr, r
