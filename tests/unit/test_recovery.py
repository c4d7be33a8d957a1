"""Offline recovery on the agent (compute/recovery.py), on a fake dockerd data root: the
path never escapes the instance's layer or volume (no '..', no symlink followed, no
host file read), whiteouts mean deleted, and an order ends in an upload or a reason."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from dockyard import model
from dockyard.cli.client import CliError
from dockyard.cli.recovery import unpack
from dockyard.compute import recovery
from dockyard.compute.recovery import Recoverer, Refused, resolve, upper_dir, volume_of

IID = "11111111-2222-3333-4444-555555555555"


def _container(root: Path, cid: str, iid: str, host: str, created: str, mount: str) -> Path:
    d = root / "containers" / cid
    d.mkdir(parents=True)
    labels = {"dockyard.instance": iid, "dockyard.host": host}
    (d / "config.v2.json").write_text(
        json.dumps({"ID": cid, "Created": created, "Config": {"Labels": labels}})
    )
    m = root / "image" / "overlay2" / "layerdb" / "mounts" / cid
    m.mkdir(parents=True)
    (m / "mount-id").write_text(mount)
    upper = root / "overlay2" / mount / "diff"
    upper.mkdir(parents=True)
    return upper


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    """An instance's upper dir with a file, a link out, a link inside, a deleted file."""
    _container(tmp_path / "docker", "old", IID, "h1", "2026-01-01T00:00:00Z", "m-old")
    up = _container(tmp_path / "docker", "new", IID, "h1", "2026-02-01T00:00:00Z", "m-new")
    _container(tmp_path / "docker", "other", "x", "h1", "2026-03-01T00:00:00Z", "m-other")
    (up / "root").mkdir()
    (up / "root" / "notes.txt").write_bytes(b"written inside\n")
    (up / "root" / "etc").symlink_to("/etc")  # the instance's /etc, not the host's
    (up / "root" / "passwd").symlink_to("/etc/passwd")
    (tmp_path / "host-secret").write_text("host only")
    (up / "root" / "up").symlink_to("../../../../host-secret")
    return up


def test_the_newest_container_of_the_instance_is_found_without_dockerd(tmp_path, upper):
    assert upper_dir(tmp_path / "docker", IID, "h1") == upper
    with pytest.raises(Refused, match="no container of instance"):
        upper_dir(tmp_path / "docker", IID, "h2")  # another host's container: not ours


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/root/../../../host-secret", "'..'"),
        ("/root/./notes.txt", "'..'"),
        ("root/notes.txt", "absolute"),
        ("/root/etc/passwd", "symbolic link"),  # through a link: would read the host's
        ("/root/up/x", "symbolic link"),
        ("/root/notes.txt/x", "not a directory"),
        ("/srv/app.conf", "never wrote it"),
    ],
)
def test_paths_that_escape_or_are_not_there_are_refused_saying_why(upper, path, why):
    with pytest.raises(Refused, match=why):
        resolve(upper, "/".join(recovery.split(path)))


def test_a_whiteout_means_the_instance_deleted_it(tmp_path, upper):
    if os.geteuid() != 0:
        pytest.skip("making a 0/0 character device (an overlay whiteout) needs root")
    os.mknod(upper / "root" / "gone.txt", 0o600 | 0o020000, os.makedev(0, 0))
    with pytest.raises(Refused, match="deleted inside the instance"):
        resolve(upper, "root/gone.txt")
    out = tmp_path / "r.tar"
    recovery.write_tar(upper / "root", out, 1 << 20, "root")
    with tarfile.open(out) as tar:
        assert "root/gone.txt" not in tar.getnames()  # skipped, not archived


def test_links_are_archived_as_links_and_never_followed(tmp_path, upper):
    out = tmp_path / "r.tar"
    recovery.write_tar(resolve(upper, "root"), out, 1 << 20, "root")
    with tarfile.open(out) as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert names["root/passwd"].issym() and names["root/passwd"].linkname == "/etc/passwd"
        assert names["root/up"].issym()
        body = tar.extractfile("root/notes.txt")
        assert body is not None and body.read() == b"written inside\n"
    assert b"host only" not in out.read_bytes()


def test_more_than_the_limit_is_refused(tmp_path, upper):
    (upper / "root" / "big").write_bytes(b"x" * 5000)
    with pytest.raises(Refused, match="more than 4096 bytes"):
        recovery.write_tar(upper / "root", tmp_path / "r.tar", 4096, "root")


def test_a_path_under_a_volume_reads_the_volume_the_longest_target_first():
    order = model.RecoveryOrder(
        id="r",
        instance_id=IID,
        path="/data/logs/a.log",
        volumes={"/data": "v1", "/data/logs": "v2"},
    )
    assert volume_of(order) == ("v2", "a.log")
    assert volume_of(order.model_copy(update={"path": "/database/x"})) is None
    assert volume_of(order.model_copy(update={"path": "/data"})) == ("v1", "")


class FakeServer:
    def __init__(self) -> None:
        self.uploads: dict[str, bytes] = {}
        self.failures: dict[str, str] = {}

    def recoveries(self, since, wait):  # pragma: no cover - not polled here
        raise AssertionError

    def upload_recovery(self, order_id, tar, sha256):
        data = tar.read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256
        self.uploads[order_id] = data

    def fail_recovery(self, order_id, error):
        self.failures[order_id] = error


class NoVolumes:
    def image(self, volume_id):
        return Path("/nonexistent") / f"{volume_id}.img"

    def mount_point(self, volume_id):
        return Path("/nonexistent") / volume_id

    def attached(self):
        return set()


def _down():
    from dockyard.errors import TemporaryError

    raise TemporaryError("dockerd does not answer")


def test_an_order_ends_in_an_upload_or_a_reason_with_dockerd_down(tmp_path, upper):
    server = FakeServer()
    rec = Recoverer(server, tmp_path / "agent", "h1", NoVolumes(), lambda: str(tmp_path / "docker"))
    rec.data_root()  # learnt while dockerd answered
    rec._docker_root = _down  # then dockerd went away for good
    rec.carry_out(model.RecoveryOrder(id="ok", instance_id=IID, path="/root/notes.txt"))
    rec.carry_out(model.RecoveryOrder(id="bad", instance_id=IID, path="/root/etc/shadow"))
    rec.carry_out(
        model.RecoveryOrder(id="vol", instance_id=IID, path="/data/x", volumes={"/data": "v9"})
    )
    with tarfile.open(fileobj=io.BytesIO(server.uploads["ok"])) as tar:
        body = tar.extractfile("notes.txt")
        assert body is not None and body.read() == b"written inside\n"
    assert "symbolic link" in server.failures["bad"]
    assert "no data on this host" in server.failures["vol"]
    assert not list((tmp_path / "agent" / "recovery").glob("*.tar"))  # nothing left behind


def test_the_cli_unpacks_inside_the_directory_and_never_overwrites(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("notes.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert unpack(buf.getvalue(), tmp_path / "out") == ["notes.txt"]
    assert (tmp_path / "out" / "notes.txt").read_bytes() == b"abc"
    with pytest.raises(CliError, match="already exists"):
        unpack(buf.getvalue(), tmp_path / "out")
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(CliError, match="refused"):
        unpack(evil.getvalue(), tmp_path / "out2")
    assert not (tmp_path / "escaped").exists()
