"""A volume's tree as it travels: the checksum sees every attribute a user would miss,
and unpacking keeps them and refuses whatever would land outside the volume."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from dockyard.compute.transfer import RegistryTransfer, gzip_level, pack, tree_checksum, unpack
from dockyard.errors import PermanentError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners need root")


def _tree(root):
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "app.conf").write_text("port=80\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF" + os.urandom(4096))
    os.chmod(root / "bin" / "tool", 0o4755)
    os.link(root / "bin" / "tool", root / "bin" / "tool-again")
    os.symlink("../etc/app.conf", root / "bin" / "conf")
    os.symlink("/etc/passwd", root / "passwd")  # a link to an absolute path: kept as a link
    (root / "empty").mkdir(mode=0o700)
    os.chown(root / "etc" / "app.conf", 1234, 5678)
    os.chown(root / "bin" / "conf", 42, 43, follow_symlinks=False)
    return root


@needs_root
def test_a_tree_packed_and_unpacked_has_the_same_checksum_owners_modes_and_links(tmp_path):
    src, dest = _tree(tmp_path / "src"), tmp_path / "dest"
    dest.mkdir()
    pack(src, tmp_path / "v.tar")

    unpack(tmp_path / "v.tar", dest)

    assert tree_checksum(dest) == tree_checksum(src)
    st = os.stat(dest / "etc" / "app.conf")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert os.stat(dest / "bin" / "tool").st_mode & 0o7777 == 0o4755
    assert os.stat(dest / "bin" / "tool").st_ino == os.stat(dest / "bin" / "tool-again").st_ino
    assert os.readlink(dest / "bin" / "conf") == "../etc/app.conf"
    assert os.lstat(dest / "bin" / "conf").st_uid == 42


@needs_root
@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "etc" / "app.conf").write_text("port=81\n"),  # content, same size
        lambda r: os.chmod(r / "etc" / "app.conf", 0o600),
        lambda r: os.chown(r / "etc" / "app.conf", 1234, 0),
        lambda r: (r / "bin" / "conf").unlink() or os.symlink("/etc/app.conf", r / "bin" / "conf"),
        lambda r: (r / "empty" / "new").touch(),
        lambda r: (r / "empty").rmdir(),
    ],
)
def test_any_change_a_user_would_notice_changes_the_checksum(tmp_path, change):
    root = _tree(tmp_path / "t")
    before = tree_checksum(root)
    change(root)
    assert tree_checksum(root) != before


def _tar_with(tmp_path, *members):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def _member(name, kind=tarfile.REGTYPE, data=b"x", link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize(
    "members",
    [
        [_member("../escaped")],
        [_member("/etc/escaped")],
        [_member("out", tarfile.SYMTYPE, link="/etc"), _member("out/escaped")],
        [
            _member("out", tarfile.SYMTYPE, link="/etc"),
            _member("x", tarfile.LNKTYPE, link="out/passwd"),
        ],
        [_member("x", tarfile.LNKTYPE, link="../../etc/passwd")],
    ],
)
def test_unpacking_refuses_members_that_land_outside_the_volume(tmp_path, members):
    dest = tmp_path / "vol"
    dest.mkdir()
    with pytest.raises(PermanentError, match="outside the destination|through a link|hard-links"):
        unpack(_tar_with(tmp_path, *members), dest)
    assert not (tmp_path / "escaped").exists()


def test_a_registry_is_trusted_as_dockerd_trusts_it(tmp_path):
    (tmp_path / "reg.example:5000").mkdir()
    (tmp_path / "reg.example:5000" / "ca.crt").write_text("x")
    t = RegistryTransfer(verify="/cloud/ca.pem", certs_d=tmp_path)
    assert t._verify("reg.example:5000") == str(tmp_path / "reg.example:5000" / "ca.crt")
    assert t._verify("127.0.0.1:5000") is False and t._verify("[::1]:5000") is False
    assert t._verify("198.18.0.1:5000") == "/cloud/ca.pem"


def test_data_that_does_not_compress_is_stored_and_the_rest_compressed_fast(tmp_path):
    noise, zeros = tmp_path / "noise", tmp_path / "zeros"
    noise.write_bytes(os.urandom(4 << 20))
    zeros.write_bytes(bytes(4 << 20))
    assert (gzip_level(noise), gzip_level(zeros)) == (0, 1)


@pytest.mark.parametrize(
    "members",
    [
        # a symlink, then a file of the same name: written through the link
        [_member("f", tarfile.SYMTYPE, link="OUTSIDE"), _member("f", data=b"pwned")],
        # a hard link to a symlink: the link's target file, wherever it is
        [_member("s", tarfile.SYMTYPE, link="OUTSIDE"), _member("h", tarfile.LNKTYPE, link="s")],
    ],
)
def test_unpacking_never_writes_through_a_symlink_of_its_own(tmp_path, members):
    victim = tmp_path / "victim"
    victim.write_bytes(b"kept")
    members = [
        (info, data)
        if info.linkname != "OUTSIDE"
        else _member(info.name, tarfile.SYMTYPE, link=str(victim))
        for info, data in members
    ]
    dest = tmp_path / "vol"
    dest.mkdir()
    with pytest.raises(PermanentError, match="twice|hard-links"):
        unpack(_tar_with(tmp_path, *members), dest)
    assert victim.read_bytes() == b"kept"
