"""``server recover --into INSTANCE:PATH`` on the lab (issue 11 item 5's second form):
files written inside an instance whose host's dockerd is gone for good arrive byte for
byte in another instance on the other host, running or stopped; what is already there
is never overwritten."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.lab import lab as labs
from tests.lab.conftest import LabRun, running_lab
from tests.lab.test_lab import docker_on

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_hosts() -> Iterator[LabRun]:
    with running_lab("--hosts", "2") as run:
        yield run


def _exec(lab: LabRun, host: str, inst: dict[str, str], script: str) -> str:
    out = docker_on(lab, host, "exec", f"dy-{inst['id']}", "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _sums(out: str) -> dict[str, str]:
    return {Path(path).name: digest for digest, path in (ln.split() for ln in out.splitlines())}


def test_files_of_a_host_whose_dockerd_is_gone_arrive_in_another_instance(
    two_hosts: LabRun,
) -> None:
    lab = two_hosts
    lab.cli("server-group", "create", "apart", "--policy", "anti-affinity")
    lab.cli("volume", "create", "keep", "--size", "64MB")
    common = ("--image", "demo", "--flavor", "small", "--network", "lab", "--group", "apart")
    pet = lab.cli_json("server", "create", "pet", *common, "--volume", "keep:/data", "--wait")
    other = lab.cli_json("server", "create", "other", *common, "--wait")
    src, dst = pet["host"], other["host"]
    assert src != dst and (pet["status"], other["status"]) == ("ACTIVE", "ACTIVE")
    write = (
        "mkdir -p /root/work && dd if=/dev/urandom of=/root/work/secret.bin bs=1024 count=700 "
        "2>/dev/null && dd if=/dev/urandom of=/data/vol.bin bs=1024 count=300 2>/dev/null && "
        "sync && sha256sum /root/work/secret.bin /data/vol.bin"
    )
    sums = _sums(_exec(lab, src, pet, write))
    lab.cli("server", "stop", "pet", "--wait")
    state = labs.Lab.load(lab.state)
    state.host(src).stop_dockerd()  # for good: its agent stays, its dockerd does not answer
    state.save()

    def recover(path: str, into: str, check: bool = True):  # type: ignore[no-untyped-def]
        return lab.cli("server", "recover", "pet", "--host", src, "--path", path,
                       "--into", into, check=check)  # fmt: skip

    done = recover("/root/work/secret.bin", "other:/root/restored")
    assert "into other:/root/restored" in done.stdout, done
    recover("/data/vol.bin", "other:/srv")
    got = _sums(_exec(lab, dst, other, "sha256sum /root/restored/secret.bin /srv/vol.bin"))
    assert got == sums

    again = recover("/root/work/secret.bin", "other:/root/restored", check=False)
    assert again.returncode == 1 and "already exists in the instance" in again.stderr, again
    assert _sums(_exec(lab, dst, other, "sha256sum /root/restored/secret.bin")) == {
        "secret.bin": sums["secret.bin"]
    }  # not overwritten

    lab.cli("server", "stop", "other", "--wait")  # a stopped target is written too
    recover("/root/work", "other:/root/whole")
    lab.cli("server", "start", "other", "--wait")
    got = _sums(_exec(lab, dst, other, "sha256sum /root/whole/work/secret.bin"))
    assert got == {"secret.bin": sums["secret.bin"]}

    host_path = lab.cli("server", "recover", "pet", "--host", src, "--path", "/root/work",
                        "--into", "/tmp/out", check=False)  # fmt: skip
    assert host_path.returncode == 1 and "--to LOCAL_DIR" in host_path.stderr
    proc = recover("/root/work", "other:/proc", check=False)
    assert proc.returncode == 1 and "backed by its host" in proc.stderr
