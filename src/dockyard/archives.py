"""Unpacking a tar that came from elsewhere without writing outside its destination,
the same on every Python 3.11: tarfile's extraction filters (PEP 706) arrived in
3.11.4, and Debian 12's own python3 is 3.11.2. Each member passes our check before
tarfile writes it; tarfile then extracts it as trusted.

    extract(tar, dest, check)  every member through ``check`` in the archive's order,
                               directories' owners, times and modes set last
    Contained()                a check: names and hard links stay in dest, nothing is
                               reached through a link, no name comes twice, no hard
                               link to a symlink; symlinks are kept as they are
    Data()                     Contained, and what PEP 706's "data" filter refuses or
                               clears: links that point out, devices and fifos,
                               set-id and group/other write bits, owners (what is
                               unpacked belongs to whoever unpacks it)

A check is used for one archive: it remembers what it let through.
"""

from __future__ import annotations

import copy
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


class UnsafeEntry(PermanentError):
    """An archive's entry that would write outside the destination, or is not allowed."""


def extract(
    tar: tarfile.TarFile, dest: str | Path, check: Check, *, numeric_owner: bool = False
) -> None:
    """Every member of ``tar`` into ``dest`` as ``check`` lets it (UnsafeEntry stops the
    unpacking where it is). As ``extractall``, a directory's attributes are set after
    everything in it, deepest first, so a read-only directory still gets its files."""
    root = os.path.realpath(dest)
    directories = []
    for member in tar:
        member = check(member, root)
        if member.isdir():
            directories.append(member)
        tar.extract(
            member, root, set_attrs=not member.isdir(), numeric_owner=numeric_owner, **_TRUSTED
        )
    for d in sorted(directories, key=lambda m: m.name, reverse=True):
        path = os.path.join(root, d.name)
        tar.chown(d, path, numeric_owner)
        tar.utime(d, path)
        tar.chmod(d, path)


class Contained:
    """Names and hard links inside the destination, never reached through a link, no
    entry twice (a second one would be written through the first, a symlink to
    anywhere), no hard link to a symlink (its target file, wherever that is)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._symlinks: set[str] = set()

    def __call__(self, member: tarfile.TarInfo, root: str) -> tarfile.TarInfo:
        name = PurePosixPath(member.name)
        target = PurePosixPath(member.linkname) if member.islnk() else PurePosixPath(".")
        for p in (name, target):
            if p.is_absolute() or ".." in p.parts:
                raise UnsafeEntry(f"holds {member.name!r}: outside the destination")
        for p in (name, target):
            if not _within(os.path.realpath(os.path.join(root, os.path.dirname(p))), root):
                raise UnsafeEntry(f"goes through a link at {member.name!r}")
        key = str(name)
        if key in self._seen or os.path.islink(os.path.join(root, key)):
            raise UnsafeEntry(f"holds {member.name!r} twice")
        if member.islnk() and str(target) in self._symlinks:
            raise UnsafeEntry(f"hard-links {member.name!r} to a symlink")
        self._seen.add(key)
        if member.issym():
            self._symlinks.add(key)
        return member


class Data(Contained):
    """Contained, for plain data: a symlink must point inside the destination, devices
    and fifos are refused, set-id, sticky and group/other write bits are cleared (a
    file keeps its owner's read and write), and owners are whoever unpacks."""

    def __call__(self, member: tarfile.TarInfo, root: str) -> tarfile.TarInfo:
        member = super().__call__(member, root)
        if not (member.isreg() or member.islnk() or member.isdir() or member.issym()):
            raise UnsafeEntry(f"holds {member.name!r}: a device, fifo or other special file")
        if member.issym():
            where = os.path.join(root, os.path.dirname(member.name), member.linkname)
            if os.path.isabs(member.linkname) or not _within(os.path.realpath(where), root):
                raise UnsafeEntry(f"holds {member.name!r}: a link out of the destination")
        mode = member.mode & 0o755
        if member.isreg() or member.islnk():
            mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
        clean = copy.copy(member)
        clean.mode = mode
        clean.uid, clean.gid, clean.uname, clean.gname = os.geteuid(), os.getegid(), "", ""
        return clean


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
