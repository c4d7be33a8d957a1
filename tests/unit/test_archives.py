"""Unpacking a tar from elsewhere, the same on every Python 3.11 (with or without
tarfile's own filters): nothing written outside the destination, plain data stays
plain data, a read-only directory still gets its files."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from dockyard import archives


def _tar(*members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf)


def _entry(name, kind=tarfile.REGTYPE, data=b"x", link="", mode=0o644, uid=0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid = kind, link, mode, uid
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def test_a_read_only_directory_gets_its_files_and_keeps_its_mode(tmp_path):
    tar = _tar(_entry("ro", tarfile.DIRTYPE, mode=0o555), _entry("ro/f", data=b"abc"))
    archives.extract(tar, tmp_path, archives.Contained())
    assert (tmp_path / "ro" / "f").read_bytes() == b"abc"
    assert stat.S_IMODE(os.stat(tmp_path / "ro").st_mode) == 0o555


@pytest.mark.parametrize(
    "entry",
    [
        _entry("l", tarfile.SYMTYPE, link="/etc/passwd"),
        _entry("d/l", tarfile.SYMTYPE, link="../../outside"),
        _entry("fifo", tarfile.FIFOTYPE),
        _entry("null", tarfile.CHRTYPE),
    ],
)
def test_data_refuses_links_out_and_special_files(tmp_path, entry):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(archives.UnsafeEntry, match="out of the destination|special file"):
        archives.extract(
            _tar(_entry("d", tarfile.DIRTYPE, mode=0o755), entry), dest, archives.Data()
        )
    assert not any(p.is_symlink() or not (p.is_dir() or p.is_file()) for p in dest.rglob("*"))


def test_contained_keeps_a_volumes_absolute_symlink_as_a_link(tmp_path):
    archives.extract(
        _tar(_entry("l", tarfile.SYMTYPE, link="/etc/passwd")), tmp_path, archives.Contained()
    )
    assert os.readlink(tmp_path / "l") == "/etc/passwd"


def test_data_clears_set_id_and_shared_write_bits_and_owners(tmp_path):
    tar = _tar(_entry("tool", mode=0o6777, uid=1234), _entry("notes", mode=0o400))
    archives.extract(tar, tmp_path, archives.Data())
    tool, notes = os.stat(tmp_path / "tool"), os.stat(tmp_path / "notes")
    assert stat.S_IMODE(tool.st_mode) == 0o755
    assert stat.S_IMODE(notes.st_mode) == 0o600
    assert tool.st_uid == os.geteuid()
