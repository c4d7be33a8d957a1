"""Named volumes' data on the move: one tar layer in the registry, checked by a tree sum.

    source host                                   target host
    volume's data dir ──tree_checksum──┐          VolumeCopy(pull, checksum)
          └──pack (tar)──gzip──push────┴─► registry ──fetch_layer──► unpack ──┐
                                             REPO-volumes/<volume id>@sha256  │
                                                   tree_checksum == checksum ◄┘
                                                   else PermanentError

The checksum is a sha256 over every entry under the data directory, sorted by
path: its path, type, mode, owner, size and content (a link: its target). The
target computes it again over what it unpacked, so owners, modes, links and
bytes are all proven to have arrived. Unpacking refuses members that would
land outside the volume (absolute names, ``..``, a path through a symlink).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
import tarfile
import tempfile
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from dockyard import archives
from dockyard.errors import PermanentError
from dockyard.images.registry import CHUNK, Registry
from dockyard.model import RegistryLogin, VolumeCopy

_CREATED = "1970-01-01T00:00:00Z"
# gzip costs ~35 ms per MB of incompressible data on a host's CPU, several times what
# the datacenter network needs to carry the MB as it is: data whose samples do not
# shrink by a tenth goes as an uncompressed tar, the rest compressed fast (level 1)
_SAMPLES, _SAMPLE = 8, 256 << 10
CERTS_D = Path("/etc/docker/certs.d")  # where dockerd (and so this) finds each registry's CA


class Transfer(Protocol):
    def push_volume(
        self, data_dir: Path, repository_ref: str, tag: str, login: RegistryLogin | None
    ) -> VolumeCopy:
        """Before: ``data_dir`` holds the volume's files and nothing writes to them. After:
        ``repository_ref`` (``HOST:PORT/REPO``) holds a one-layer image of them tagged
        ``tag``; the copy names it by digest, with the tree's checksum. Pushed already:
        the same digest, nothing sent again."""
        ...

    def restore_volume(self, copy: VolumeCopy, data_dir: Path, login: RegistryLogin | None) -> None:
        """Before: ``data_dir`` is a fresh volume's empty data directory. After: it holds
        the copy's files with their owners, modes and links, and their checksum is the
        copy's; else PermanentError, with ``data_dir`` holding part of it (the caller
        removes the volume). A registry away is a TemporaryError."""
        ...

    def push_layer(
        self, upper_dir: Path, base: str, push_ref: str, login: RegistryLogin | None
    ) -> tuple[str, int]:
        """Before: ``upper_dir`` is a stopped container's overlay upper directory over
        the image ``base`` (``HOST:PORT/REPO@sha256:...``, on ``push_ref``'s registry).
        After: ``push_ref`` (``HOST:PORT/REPO:TAG``) names ``base`` plus one layer of
        what ``upper_dir`` holds (whiteouts as ``.wh.`` files): what a docker commit
        and push give, without dockerd's gzip. Returns (digest, layers)."""
        ...

    def stored_size(self, pull: str, login: RegistryLogin | None) -> int:
        """Bytes the registry stores for the image ``HOST:PORT/REPO@sha256:...`` (config
        and compressed layers); 0 when it has no such manifest."""
        ...


def tree_checksum(root: Path) -> str:
    """``sha256:...`` over (path, type, mode, owner, size, content) of every entry."""
    total = hashlib.sha256()
    for rel in _entries(root):
        total.update(_line(root, rel))
    return "sha256:" + total.hexdigest()


def _entries(root: Path) -> list[str]:
    out = ["."]
    for top, dirs, files in os.walk(root):  # symlinks to directories are not followed
        base = os.path.relpath(top, root)
        out += [os.path.normpath(os.path.join(base, n)) for n in dirs + files]
    return sorted(out)


def _line(root: Path, rel: str) -> bytes:
    path = root / rel
    st = os.lstat(path)
    kind, size, content = "o", 0, str(st.st_rdev)
    if stat.S_ISDIR(st.st_mode):
        kind, content = "d", ""
    elif stat.S_ISLNK(st.st_mode):
        kind, content = "l", os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        kind, size, content = "f", st.st_size, _file_sha256(path)
    mode = stat.S_IMODE(st.st_mode) if kind != "l" else 0o777
    fields = (rel, kind, f"{mode:o}", str(st.st_uid), str(st.st_gid), str(size), content)
    return ("\0".join(fields) + "\n").encode("utf-8", "surrogateescape")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def pack(root: Path, dest: Path) -> None:
    """A tar of everything under ``root`` (numeric owners, modes, links, hard links)."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in _entries(root):
            tar.add(root / rel, arcname=rel, recursive=False)


def unpack(archive: Path, root: Path) -> None:
    """Everything in ``archive`` into ``root``, owners and modes as they were.

    Nothing is written outside ``root`` (archives.Contained: no absolute or ``..``
    name, no entry reached through a link, no entry twice, a hard link only to a
    file unpacked before it). Symlinks themselves are kept as they are (a volume may
    hold absolute ones) and never followed here."""
    with tarfile.open(archive, "r:*") as tar:
        try:
            archives.extract(tar, root, archives.Contained(), numeric_owner=True)
        except archives.BadArchive as exc:
            raise PermanentError(f"the volume copy {exc}") from exc


_OPAQUE = "trusted.overlay.opaque"
# overlay's metacopy and redirect_dir features leave entries whose data or name live in
# a lower layer: such an upper dir is no layer on its own (the snapshot commits instead)
_ELSEWHERE = ("trusted.overlay.metacopy", "trusted.overlay.redirect")


def pack_layer(upper: Path, dest: Path) -> None:
    """A tar in image-layer format of an overlay upper directory: a whiteout (a 0:0
    character device) becomes an empty ``.wh.NAME``, an opaque directory gets a
    ``.wh..wh..opq`` inside, other extended attributes (file capabilities) travel as
    SCHILY.xattr records; overlay's own ``trusted.*`` attributes stay behind.
    PermanentError for an entry overlay's metacopy or redirect_dir made."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in _entries(upper)[1:]:  # not "." itself: the layer has no root entry
            path = upper / rel
            st = os.lstat(path)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                tar.addfile(_marker(rel, ".wh." + os.path.basename(rel), st))
                continue
            info = tar.gettarinfo(str(path), arcname=rel)
            if info is None:  # a unix socket: as docker commit, left behind
                continue
            info.pax_headers = _xattrs(path)
            if any(_getxattr(path, a) is not None for a in _ELSEWHERE):
                raise PermanentError(f"{rel} keeps its data or name in a lower layer")
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if info.isdir() and _getxattr(path, _OPAQUE) == b"y":
                tar.addfile(_marker(rel, os.path.join(os.path.basename(rel), ".wh..wh..opq"), st))


def _marker(rel: str, name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(os.path.normpath(os.path.join(os.path.dirname(rel), name)))
    info.mtime, info.mode = int(st.st_mtime), 0o644
    return info


def _xattrs(path: Path) -> dict[str, str]:
    out = {}
    for name in os.listxattr(path, follow_symlinks=False):
        if not name.startswith("trusted."):
            value = _getxattr(path, name) or b""
            out["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return out


def _getxattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def gzip_level(path: Path) -> int:
    """0 (store) for data that does not compress, else 1: judged on samples spread
    over the file, compressed at level 1."""
    size = path.stat().st_size
    step = max(size // _SAMPLES, _SAMPLE)
    raw = packed = 0
    with path.open("rb") as f:
        for offset in range(0, size, step):
            f.seek(offset)
            chunk = f.read(_SAMPLE)
            raw, packed = raw + len(chunk), packed + len(zlib.compress(chunk, 1))
    return 0 if packed > 0.9 * raw else 1


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _split(ref: str) -> tuple[str, str]:
    """``HOST:PORT/REPO[@sha256:...]`` -> (``HOST:PORT``, ``REPO[@...]``)."""
    host, _, rest = ref.partition("/")
    if not rest:
        raise PermanentError(f"{ref!r} names no repository (HOST:PORT/REPO)")
    return host, rest


class RegistryTransfer:
    """The real one: HTTPS to the registries, trusting what this host's dockerd trusts
    for pulls: ``certs_d/HOST:PORT/ca.crt`` when there is one, no verification on
    loopback (dockerd's own default for 127.0.0.0/8), else ``verify`` (the cloud's CA)."""

    def __init__(self, verify: bool | str = True, certs_d: Path = CERTS_D) -> None:
        self.verify, self.certs_d = verify, certs_d

    def _registry(self, host: str, login: RegistryLogin | None) -> Registry:
        auth = (login.username, login.password) if login else None
        return Registry(f"https://{host}", auth=auth, verify=self._verify(host), timeout=300)

    def _verify(self, host: str) -> bool | str:
        ca = self.certs_d / host / "ca.crt"
        if ca.exists():
            return str(ca)
        name = host.rpartition(":")[0].strip("[]") if ":" in host else host
        try:
            if ipaddress.ip_address(name).is_loopback:
                return False
        except ValueError:
            pass
        return self.verify

    def stored_size(self, pull: str, login: RegistryLogin | None) -> int:
        host, rest = _split(pull)
        repository, _, digest = rest.partition("@")
        with self._registry(host, login) as reg:
            found = reg.describe(repository, digest)
        return found.size if found else 0

    def push_volume(
        self, data_dir: Path, repository_ref: str, tag: str, login: RegistryLogin | None
    ) -> VolumeCopy:
        host, repository = _split(repository_ref)
        checksum = tree_checksum(data_dir)
        with tempfile.TemporaryDirectory(prefix="dockyard-volume-") as tmp:
            archive = Path(tmp) / "volume.tar"
            pack(data_dir, archive)
            with self._registry(host, login) as reg:  # a fixed time: same data, same digest
                level = gzip_level(archive) or None  # incompressible: the tar as it is
                pushed = reg.push_rootfs(repository, tag, archive, None, _CREATED, level)
        return VolumeCopy(pull=f"{host}/{repository}@{pushed.digest}", checksum=checksum)

    def push_layer(
        self, upper_dir: Path, base: str, push_ref: str, login: RegistryLogin | None
    ) -> tuple[str, int]:
        host, rest = _split(push_ref)
        base_host, base_rest = _split(base)
        if base_host != host:
            raise PermanentError(f"{base} is not in the registry of {push_ref}")
        repository, _, tag = rest.rpartition(":")
        with tempfile.TemporaryDirectory(prefix="dockyard-layer-") as tmp:
            archive = Path(tmp) / "layer.tar"
            pack_layer(upper_dir, archive)
            with self._registry(host, login) as reg:  # uncompressed: no pass to gzip it
                pushed = reg.push_layer_on(base_rest, repository, tag, archive, _now())
                layers = reg.layer_count(f"{repository}@{pushed.digest}")
        return pushed.digest, layers

    def restore_volume(self, copy: VolumeCopy, data_dir: Path, login: RegistryLogin | None) -> None:
        host, rest = _split(copy.pull)
        repository, _, digest = rest.partition("@")
        with tempfile.TemporaryDirectory(prefix="dockyard-volume-") as tmp:
            archive = Path(tmp) / "volume.tar.gz"
            with self._registry(host, login) as reg:
                reg.fetch_layer(repository, digest, archive)
            unpack(archive, data_dir)
        got = tree_checksum(data_dir)
        if got != copy.checksum:
            raise PermanentError(
                f"the volume's data from {copy.pull} does not match its checksum "
                f"({got} != {copy.checksum}): refused; migrate again"
            )


class FakeTransfer:
    """In memory, for unit tests: ``bad`` makes restores of those pulls mismatch."""

    def __init__(self) -> None:
        self.pushed: dict[str, VolumeCopy] = {}  # data dir -> its copy
        self.restored: list[tuple[str, str]] = []  # (pull, data dir)
        self.bad: set[str] = set()
        self.layered: list[tuple[str, str, str]] = []  # (upper dir, base, push_ref)

    def push_volume(
        self, data_dir: Path, repository_ref: str, tag: str, login: RegistryLogin | None
    ) -> VolumeCopy:
        digest = hashlib.sha256(f"{data_dir}|{tag}".encode()).hexdigest()
        copy = VolumeCopy(pull=f"{repository_ref}@sha256:{digest}", checksum=f"sha256:{digest}")
        self.pushed[str(data_dir)] = copy
        return copy

    def restore_volume(self, copy: VolumeCopy, data_dir: Path, login: RegistryLogin | None) -> None:
        self.restored.append((copy.pull, str(data_dir)))
        if copy.pull in self.bad:
            raise PermanentError(f"the volume's data from {copy.pull} does not match")

    def push_layer(
        self, upper_dir: Path, base: str, push_ref: str, login: RegistryLogin | None
    ) -> tuple[str, int]:
        digest = hashlib.sha256(f"{upper_dir}|{base}|{push_ref}".encode()).hexdigest()
        self.layered.append((str(upper_dir), base, push_ref))
        return f"sha256:{digest}", 2

    def stored_size(self, pull: str, login: RegistryLogin | None) -> int:
        return 1234
