"""Offline data recovery on the agent's host: read files of an instance straight off
the disk (its container's writable layer, its named volumes' images) and upload them
as a tar, without dockerd: it may be the thing that will not start.

    Recoverer.run: long-poll GET /agent/hosts/NAME/recoveries ──► orders
      for each order (once per id):
        source_of(order)      the path under a named volume's mount target:
                                 that volume (mounted already, or its image mounted
                                 read-only through a loop device for the read)
                              else: the container's overlay2 upper directory, found
                                 from dockerd's files (containers/*/config.v2.json,
                                 image/overlay2/layerdb/mounts/ID/mount-id)
        resolve(root, path)   component by component, lstat only: '..' refused, a
                              symlink on the way refused (it could point anywhere on
                              the host), a whiteout means the instance deleted it
        write_tar(...)        the file or directory (symlinks kept as links, never
                              followed; whiteouts and device nodes skipped), size-capped
        PUT /agent/recoveries/ID/data (sha256 header)  or  POST .../failure (why)
      for each delivery (recovered files to write into an instance of this host):
        GET /agent/recoveries/ID/data, sha256 checked
        under(tar, directory)  its entries renamed under the target directory
        FilesInto.put(...)     dockerd's archive endpoint (docker cp): safe in a
                               running or stopped container, paths resolved inside it
        POST .../delivered  or  POST .../failure (why)

The upper directory holds what the instance wrote (changed files are copied up whole);
files that came with the image and were never changed live in the image's lower
layers and are not recovered from here: they are in the image.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dockyard import model
from dockyard.compute.driver import HOST_LABEL, LABEL
from dockyard.errors import DockyardError, PermanentError

log = logging.getLogger("dockyard.recovery")
DEFAULT_DOCKER_ROOT = "/var/lib/docker"


class Refused(PermanentError):
    """The order cannot be carried out; the message says why, for the admin."""


class RecoveryServer(Protocol):
    def recoveries(self, since: int, wait: float) -> model.RecoveryOrders:
        """Long poll: this host's queued recovery orders once its generation differs."""
        ...

    def upload_recovery(self, order_id: str, tar: Path, sha256: str) -> None: ...

    def fail_recovery(self, order_id: str, error: str) -> None: ...

    def recovered_data(self, order_id: str) -> bytes: ...

    def delivered(self, order_id: str) -> None: ...


class FilesInto(Protocol):
    """Writes into an instance's filesystem on this host (compute/drivers/docker_files.py)."""

    def put(self, instance_id: str, tar: bytes, top: str) -> None:
        """Extract ``tar`` (entries already under their directory, relative to the
        root) into the instance's container, running or stopped. Refused when ``top``
        (the one entry that is the recovered file or directory) already exists there;
        TemporaryError while dockerd does not answer."""
        ...


class VolumeFiles(Protocol):
    """Where a named volume lives on this host (compute/volumes.py's LoopVolumes)."""

    def image(self, volume_id: str) -> Path: ...

    def mount_point(self, volume_id: str) -> Path: ...

    def attached(self) -> set[str]: ...


@dataclass(frozen=True)
class Source:
    kind: str  # "layer" or "volume"
    root: Path  # the directory the instance's path is relative to
    rel: str  # the path under it, "" for the root itself


def split(path: str) -> list[str]:
    """The components of an absolute path inside the instance; '.' and '..' refused."""
    if not path.startswith("/"):
        raise Refused(f"{path!r} is not an absolute path inside the instance")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts) or any("\x00" in p for p in parts):
        raise Refused(f"{path!r} has '.' or '..' components: give a plain path")
    return parts


def resolve(root: Path, rel: str, what: str = "the instance's writable layer") -> Path:
    """``rel`` under ``root``, checked with lstat component by component: it exists,
    no component before the last is a symlink (a link is the instance's own idea of a
    path and could name any file of the host), and none is a whiteout."""
    if root.is_symlink() or not root.is_dir():
        raise Refused(f"{what} is not on this host's disk ({root} is not a directory)")
    here = root
    parts = split("/" + rel)
    for i, part in enumerate(parts):
        here = here / part
        shown = "/" + "/".join(parts[: i + 1])
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            raise Refused(
                f"{shown} is not in {what}: the instance never wrote it there (files that "
                "came with the image are in the image, not in the writable layer)"
            ) from None
        if _whiteout(st):
            raise Refused(f"{shown} was deleted inside the instance (an overlay whiteout)")
        if stat.S_ISLNK(st.st_mode) and i < len(parts) - 1:
            raise Refused(
                f"{shown} is a symbolic link: recovery does not follow links (it could point "
                "outside the instance); ask for the path it points to"
            )
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise Refused(f"{shown} is not a directory")
    return here


def _whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def write_tar(src: Path, out: Path, max_bytes: int, name: str) -> None:
    """``src`` (a file, a link or a directory, taken whole) as ``out``, named ``name``.
    Links are stored as links; whiteouts, devices and fifos skipped.
    Raises Refused past ``max_bytes`` of file data."""
    total = 0

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        nonlocal total
        if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
            return None  # whiteouts (0/0 char devices), devices, fifos: not data
        total += info.size
        if total > max_bytes:
            raise Refused(f"more than {max_bytes} bytes under that path: ask for less of it")
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(src), arcname=name, recursive=True, filter=keep)
    if out.stat().st_size > max_bytes + (1 << 20):
        raise Refused(f"the tar is larger than {max_bytes} bytes: ask for less of it")


def upper_dir(data_root: Path, instance_id: str, host: str) -> Path:
    """The overlay2 upper directory of the instance's newest container, from dockerd's
    own files (no dockerd needed)."""
    best: tuple[str, str] | None = None
    for config in (data_root / "containers").glob("*/config.v2.json"):
        try:
            c = json.loads(config.read_text())
        except (OSError, ValueError):
            continue
        labels = (c.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL) != instance_id or labels.get(HOST_LABEL) != host:
            continue
        created = str(c.get("Created", ""))
        if best is None or created > best[0]:
            best = (created, str(c.get("ID", config.parent.name)))
    if best is None:
        raise Refused(
            f"no container of instance {instance_id} under {data_root}/containers: it was "
            "removed, or dockerd keeps its data elsewhere (the agent learns the data root "
            "from dockerd while it runs)"
        )
    mount = data_root / "image" / "overlay2" / "layerdb" / "mounts" / best[1] / "mount-id"
    try:
        mount_id = mount.read_text().strip()
    except OSError as exc:
        raise Refused(f"cannot read {mount} (only overlay2 is supported): {exc}") from exc
    if not mount_id or "/" in mount_id or mount_id in (".", ".."):
        raise Refused(f"{mount} holds no usable layer id")
    return data_root / "overlay2" / mount_id / "diff"


def volume_of(order: model.RecoveryOrder) -> tuple[str, str] | None:
    """(volume id, path under the volume) when the path is under a named volume's mount
    target (the longest that matches), else None."""
    parts = split(order.path)
    best: tuple[int, str] | None = None
    for target, volume_id in order.volumes.items():
        tparts = [p for p in target.split("/") if p]
        if tparts and parts[: len(tparts)] == tparts and (best is None or len(tparts) > best[0]):
            best = (len(tparts), volume_id)
    if best is None:
        return None
    return best[1], "/".join(parts[best[0] :])


class Recoverer:
    """Carries out this host's recovery orders, one at a time, each once per run."""

    def __init__(
        self,
        server: RecoveryServer,
        state_dir: Path,
        host: str,
        volumes: VolumeFiles,
        docker_root: Callable[[], str],
        files_into: Callable[[], FilesInto] | None = None,
    ) -> None:
        self.server, self.host, self.volumes = server, host, volumes
        self.work = state_dir / "recovery"
        self._docker_root = docker_root
        self._files_into = files_into
        self._done: set[str] = set()

    def run(self, stop: threading.Event) -> None:
        generation = -1
        while not stop.is_set():
            self.data_root()  # learn it while dockerd answers, for when it will not
            try:
                orders = self.server.recoveries(since=generation, wait=25)
            except DockyardError as exc:
                log.warning("recovery orders: %s", exc.detail)
                stop.wait(2)
                continue
            generation = orders.generation
            for order in orders.orders:
                if order.id not in self._done:
                    self.carry_out(order)
            for delivery in orders.deliveries:
                if delivery.id not in self._done:
                    self.deliver(delivery)

    def deliver(self, order: model.RecoveryDelivery) -> None:
        """Write recovered files into an instance here, or tell the server why not;
        retried on the next poll while dockerd or the server does not answer."""
        try:
            if self._files_into is None:
                raise Refused("this agent cannot write into instances")
            writer = self._files_into()
            data = self.server.recovered_data(order.id)
            if hashlib.sha256(data).hexdigest() != order.sha256:
                raise Refused("the recovered tar arrived damaged (its sha256 differs)")
            moved, top = under(data, order.path)
            writer.put(order.instance_id, moved, top)
            self.server.delivered(order.id)
            log.info("recovery %s: written into %s:%s", order.id, order.instance_id, order.path)
            self._done.add(order.id)
        except Refused as exc:
            log.warning("recovery %s into %s refused: %s", order.id, order.path, exc.detail)
            self._tell(order.id, exc.detail)
        except DockyardError as exc:
            log.warning("recovery %s into an instance: %s; will retry", order.id, exc.detail)

    def carry_out(self, order: model.RecoveryOrder) -> None:
        """Upload the tar, or tell the server why not; retried on the next poll when
        the server could not be told."""
        self.work.mkdir(parents=True, exist_ok=True)
        out = self.work / f"{order.id}.tar"
        try:
            with self.source(order) as src:
                found = resolve(src.root, src.rel, _what(src))
                write_tar(found, out, order.max_bytes, (split(order.path) or ["rootfs"])[-1])
            self.server.upload_recovery(order.id, out, _sha256(out))
            log.info("recovery %s: %s uploaded", order.id, order.path)
            self._done.add(order.id)
        except Refused as exc:
            log.warning("recovery %s of %s refused: %s", order.id, order.path, exc.detail)
            self._tell(order.id, exc.detail)
        except DockyardError as exc:
            log.warning("recovery %s: %s; will retry", order.id, exc.detail)
        except OSError as exc:
            self._tell(order.id, f"reading {order.path} failed: {exc}")
        finally:
            out.unlink(missing_ok=True)

    def _tell(self, order_id: str, error: str) -> None:
        try:
            self.server.fail_recovery(order_id, error[:1024])
            self._done.add(order_id)
        except DockyardError as exc:
            log.warning("could not report recovery %s failed: %s", order_id, exc.detail)

    @contextmanager
    def source(self, order: model.RecoveryOrder) -> Iterator[Source]:
        found = volume_of(order)
        if found is None:
            upper = upper_dir(self.data_root(), order.instance_id, self.host)
            yield Source("layer", upper, "/".join(split(order.path)))
            return
        volume_id, rel = found
        with self.volume_root(volume_id) as root:
            yield Source("volume", root, rel)

    def data_root(self) -> Path:
        """dockerd's data root: asked while it answers, remembered for when it does not."""
        cache = self.work / "docker-root"
        try:
            root = self._docker_root()
            if not cache.is_file() or cache.read_text() != root:
                self.work.mkdir(parents=True, exist_ok=True)
                cache.write_text(root)
            return Path(root)
        except DockyardError:
            try:
                return Path(cache.read_text().strip() or DEFAULT_DOCKER_ROOT)
            except OSError:
                return Path(DEFAULT_DOCKER_ROOT)

    @contextmanager
    def volume_root(self, volume_id: str) -> Iterator[Path]:
        """The volume's data directory: where it is mounted, or its image mounted
        read-only (no journal replay) for the read and unmounted after."""
        if volume_id in self.volumes.attached():
            yield self.volumes.mount_point(volume_id) / "data"
            return
        image = self.volumes.image(volume_id)
        if not image.is_file():
            raise Refused(f"volume {volume_id} has no data on this host ({image} is missing)")
        mnt = self.work / f"mnt-{volume_id}"
        mnt.mkdir(parents=True, exist_ok=True)
        opts = "ro,noload,loop,nodev,nosuid,noexec"
        _run("mount", "-t", "ext4", "-o", opts, str(image), str(mnt))
        try:
            yield mnt / "data"
        finally:
            _run("umount", str(mnt))
            mnt.rmdir()


def under(data: bytes, directory: str) -> tuple[bytes, str]:
    """The tar's entries renamed under ``directory`` (relative to the instance's root,
    for an extraction at "/"), and the path of its top entry. Hard links' targets move
    with them; symbolic links keep their text (the instance's own idea of a path).
    No entry for the directory itself: the extraction makes what is missing and leaves
    what is there as it was."""
    prefix = "/".join(split(directory))
    out = io.BytesIO()
    tops: set[str] = set()
    with (
        tarfile.open(fileobj=io.BytesIO(data)) as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for info in src:
            parts = split("/" + info.name)  # '..' and absolute names refused
            if not parts:
                raise Refused("the recovered tar has an entry without a name")
            tops.add(parts[0])
            info.name = "/".join([prefix, *parts]).lstrip("/")
            if info.islnk():
                info.linkname = "/".join([prefix, *split("/" + info.linkname)]).lstrip("/")
            dst.addfile(info, src.extractfile(info) if info.isreg() else None)
    if len(tops) != 1:
        raise Refused(f"the recovered tar holds {len(tops)} top entries, not one")
    return out.getvalue(), "/" + "/".join([prefix, tops.pop()]).lstrip("/")


def _what(src: Source) -> str:
    return "the volume" if src.kind == "volume" else "the instance's writable layer"


def _run(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise Refused(f"{' '.join(cmd)} failed: {r.stderr.strip()[:300]}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
