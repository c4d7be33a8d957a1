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


@pytest.mark.parametrize("check", [archives.Contained, archives.Data])
def test_nothing_is_written_through_a_symlink_of_the_archive_even_one_pointing_inside(
    tmp_path, check
):
    dest = tmp_path / "dest"
    dest.mkdir()
    tar = _tar(_entry("here", tarfile.SYMTYPE, link="."), _entry("here/f", data=b"x"))
    with pytest.raises(archives.UnsafeEntry, match="through a link"):
        archives.extract(tar, dest, check())
    assert not (dest / "f").exists()


def test_a_path_longer_than_path_max_cannot_hide_where_a_link_goes(tmp_path):
    # realpath gives up past PATH_MAX and reads ".." as text; the kernel follows the
    # links (CVE-2025-4517): "e" would be dest/../.. and e/pwned two levels up
    dest = tmp_path / "g" / "p" / "dest"
    dest.mkdir(parents=True)
    deep, steps, members, path = "d" * 247, "abcdefghijklmnop", [], ""
    for step in steps:
        members.append(_entry(os.path.join(path, deep), tarfile.DIRTYPE, mode=0o755))
        members.append(_entry(os.path.join(path, step), tarfile.SYMTYPE, link=deep))
        path = os.path.join(path, deep)
    far = os.path.join(*steps, "l" * 254)
    members.append(_entry(far, tarfile.SYMTYPE, link="../" * len(steps)))
    members.append(_entry("e", tarfile.SYMTYPE, link=far + "/../.."))
    members.append(_entry("e/pwned", data=b"outside"))
    with pytest.raises(archives.UnsafeEntry, match="through a link"):
        archives.extract(_tar(*members), dest, archives.Data())
    assert not (tmp_path / "g" / "pwned").exists()


@pytest.mark.parametrize(
    "members",
    [
        # a symlink reached through another symlink: link(2) copies the symlink, and
        # the hard link's chmod and chown then follow it to its target
        [
            _entry("x", tarfile.DIRTYPE, mode=0o755),
            _entry("s", tarfile.SYMTYPE, link="x"),
            _entry("x/l", tarfile.SYMTYPE, link="VICTIM"),
            _entry("h", tarfile.LNKTYPE, link="s/l", mode=0o4777),
        ],
        [_entry("h", tarfile.LNKTYPE, link="nowhere")],
        [_entry("d", tarfile.DIRTYPE, mode=0o755), _entry("h", tarfile.LNKTYPE, link="d")],
    ],
)
def test_a_hard_link_goes_only_to_a_file_unpacked_before_it(tmp_path, members):
    victim = tmp_path / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)
    for info, _ in members:
        info.linkname = info.linkname.replace("VICTIM", str(victim))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(archives.UnsafeEntry, match="hard-links"):
        archives.extract(_tar(*members), dest, archives.Contained())
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("name", "link", "inside"),
    [
        ("l", ".", True),
        ("d/l", "../f", True),
        ("d/l", "e/f", True),
        ("l", "../f", False),
        ("d/l", "../../f", False),
        ("l", "d/../f", False),  # climbs after descending: d may be a link
        ("l", "/etc/passwd", False),
    ],
)
def test_data_keeps_a_symlink_only_if_it_climbs_no_higher_than_the_destination(
    tmp_path, name, link, inside
):
    tar = _tar(_entry("d", tarfile.DIRTYPE, mode=0o755), _entry(name, tarfile.SYMTYPE, link=link))
    if inside:
        archives.extract(tar, tmp_path, archives.Data())
        assert os.readlink(tmp_path / name) == link
    else:
        with pytest.raises(archives.UnsafeEntry, match="out of the destination"):
            archives.extract(tar, tmp_path, archives.Data())


def test_an_entry_the_file_system_refuses_is_an_error_not_a_traceback(tmp_path):
    tar = _tar(_entry("f", data=b"x"), _entry("f/g", data=b"y"))
    with pytest.raises(archives.BadArchive, match="holds 'f/g', which could not be written"):
        archives.extract(tar, tmp_path, archives.Contained())
