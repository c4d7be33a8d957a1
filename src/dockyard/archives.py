"""Unpacking a tar that came from elsewhere without writing outside its destination,
the same on every Python 3.11: tarfile's extraction filters (PEP 706) arrived in
3.11.4, and Debian 12's own python3 is 3.11.2. Each member passes our check before
tarfile writes it; tarfile then extracts it as trusted.

    extract(tar, dest, check)  every member through ``check`` in the archive's order,
                               directories' owners, times and modes set last
    Contained()                a check: every write lands in dest through real
                               directories only, no name comes twice, a hard link
                               only to a file unpacked before it; symlinks are kept
                               as they are (a volume may hold absolute ones)
    Data()                     Contained, and what PEP 706's "data" filter refuses or
                               clears: links that point out, devices and fifos,
                               set-id and group/other write bits, owners (what is
                               unpacked belongs to whoever unpacks it)

Paths are judged by their names and ``lstat``, never by ``realpath``: realpath gives
up quietly on a path longer than PATH_MAX and then treats ``..`` as text, while the
kernel still follows the links (CVE-2025-4517 in tarfile's own filters). A name
must not pass through any symlink, the archive's own or one already in dest, so
whatever a symlink points at, nothing is written through it.

A check is used for one archive: it remembers what it let through.
"""

from __future__ import annotations

import copy
import errno
import os
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from dockyard.errors import PermanentError

Check = Callable[[tarfile.TarInfo, str], tarfile.TarInfo]

# on 3.11.4 and later tarfile wants a filter named, and ours has run already
_TRUSTED: dict[str, Any] = (
    {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
)


class BadArchive(PermanentError):
    """An archive that could not be unpacked; what was written so far stays."""


class UnsafeEntry(BadArchive):
    """An archive's entry that would write outside the destination, or is not allowed."""


def extract(
    tar: tarfile.TarFile, dest: str | Path, check: Check, *, numeric_owner: bool = False
) -> None:
    """Every member of ``tar`` into ``dest`` as ``check`` lets it (UnsafeEntry stops the
    unpacking where it is; BadArchive when the file system refuses an entry). As
    ``extractall``, a directory's attributes are set after everything in it, deepest
    first, so a read-only directory still gets its files."""
    root = os.path.realpath(dest)  # the caller's own directory: its links are its own
    directories = []
    for member in tar:
        member = check(member, root)
        if member.isdir():
            directories.append(member)
        try:
            tar.extract(
                member, root, set_attrs=not member.isdir(), numeric_owner=numeric_owner, **_TRUSTED
            )
        except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
            raise BadArchive(f"holds {member.name!r}, which could not be written: {exc}") from exc
    for d in sorted(directories, key=lambda m: m.name, reverse=True):
        path = os.path.join(root, d.name)
        tar.chown(d, path, numeric_owner)
        tar.utime(d, path)
        tar.chmod(d, path)


class Contained:
    """Every write in the destination through real directories only (no component of
    a name is a symlink, of the archive's or already there), no entry twice (a second
    one would be written through the first), a hard link only to a regular file this
    archive unpacked before it (not to a symlink, whose target chmod and chown would
    follow, and never to a file tarfile would have to find elsewhere)."""

    def __init__(self) -> None:
        self._seen: set[PurePosixPath] = set()
        self._files: set[PurePosixPath] = set()

    def __call__(self, member: tarfile.TarInfo, root: str) -> tarfile.TarInfo:
        name = _relative(member.name, member)
        if not name.parts and not member.isdir():
            raise UnsafeEntry(f"holds an entry with no name ({member.name!r})")
        _no_link_on_the_way(root, name, member)
        if name in self._seen or os.path.islink(os.path.join(root, name)):
            raise UnsafeEntry(f"holds {member.name!r} twice")
        if member.islnk():
            target = _relative(member.linkname, member)
            if target not in self._files or not _is_file(os.path.join(root, target)):
                raise UnsafeEntry(
                    f"hard-links {member.name!r} to {member.linkname!r}, not a file unpacked "
                    "before it"
                )
        self._seen.add(name)
        if member.isreg() or member.islnk():
            self._files.add(name)
        return member


class Data(Contained):
    """Contained, for plain data: a symlink must point inside the destination, devices
    and fifos are refused, set-id, sticky and group/other write bits are cleared (a
    file keeps its owner's read and write, a directory all three of its owner's), and
    owners are whoever unpacks."""

    def __call__(self, member: tarfile.TarInfo, root: str) -> tarfile.TarInfo:
        member = super().__call__(member, root)
        if not (member.isreg() or member.islnk() or member.isdir() or member.issym()):
            raise UnsafeEntry(f"holds {member.name!r}: a device, fifo or other special file")
        if member.issym() and not _points_inside(member.name, member.linkname):
            raise UnsafeEntry(f"holds {member.name!r}: a link out of the destination")
        mode = member.mode & 0o755
        if member.isreg() or member.islnk():
            mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
        elif member.isdir():
            mode |= 0o700  # its owner can still go in and write (tarfile cannot leave it out)
        clean = copy.copy(member)
        clean.mode = mode
        clean.uid, clean.gid, clean.uname, clean.gname = os.geteuid(), os.getegid(), "", ""
        return clean


def _relative(text: str, member: tarfile.TarInfo) -> PurePosixPath:
    """``text`` as a path below the destination (``a//b`` and ``a/./b`` are ``a/b``)."""
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafeEntry(f"holds {member.name!r}: outside the destination")
    return path


def _no_link_on_the_way(root: str, name: PurePosixPath, member: tarfile.TarInfo) -> None:
    """Every directory above ``name`` is a real directory or not there yet (tarfile
    makes it): checked from the top, so each lstat sees through real directories only."""
    for depth in range(1, len(name.parts)):
        try:
            if os.path.islink(path := os.path.join(root, *name.parts[:depth])):
                raise UnsafeEntry(f"goes through a link at {member.name!r}")
            os.lstat(path)
        except FileNotFoundError:
            return  # neither is anything below it
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise UnsafeEntry(f"holds {member.name!r} under a file") from exc
            raise UnsafeEntry(f"holds {member.name!r}: {exc.strerror}") from exc


def _is_file(path: str) -> bool:
    return os.path.isfile(path) and not os.path.islink(path)


def _points_inside(name: str, link: str) -> bool:
    """A relative symlink whose target climbs first and then only descends (``../a/b``,
    not ``a/../b``), and climbs no higher than the destination. Its own directories are
    real (Contained), so the climb is what the names say; what it descends through is
    in the destination or, if a symlink, one that passed this same rule (or one that
    was in the destination before: the caller's own)."""
    target = PurePosixPath(link)
    if not link or target.is_absolute():
        return False
    ups = 0
    for part in target.parts:
        if part != "..":
            break
        ups += 1
    if ".." in target.parts[ups:]:
        return False
    return ups <= len(PurePosixPath(name).parent.parts)
