"""Named volumes on an agent's host: one ext4 image file per volume, on a loop device.

    STATE_DIR/volumes/
      <id>.img        the volume: a sparse file holding an ext4 filesystem of its size,
                      self-contained (migration copies this one file)
      <id>/mnt        where the image is mounted (nodev, nosuid) while this host's
                      instances use it
      <id>/mnt/data   what instances get bind-mounted; it exists only while the
                      filesystem is mounted, so a lost mount makes dockerd refuse to
                      start the container instead of letting it write to the host's disk

The size is the filesystem's: a write past it fails with ENOSPC inside the
instance and touches nothing outside the image. Level-triggered (``sweep``):
a volume is attached while a desired instance of this host uses it, detached
(file kept) when none does, and removed when the server no longer lists it on
this host and none uses it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dockyard.errors import PermanentError, TemporaryError
from dockyard.model import DesiredInstance

log = logging.getLogger(__name__)


class VolumeStore(Protocol):
    def attach(self, volume_id: str, size_mb: int) -> str:
        """After: the volume exists (created empty on first use) and its filesystem is
        mounted; returns the directory to bind-mount into instances. Already attached:
        no-op. After an agent restart or a reboot the loop device and mount are made again."""
        ...

    def source(self, volume_id: str) -> str:
        """The directory instances bind-mount; it exists only while attached."""
        ...

    def detach(self, volume_id: str) -> None:
        """After: not mounted, no loop device; the image is kept. Not attached: no-op."""
        ...

    def remove(self, volume_id: str) -> None:
        """After: no mount, no loop device, no file of the volume. Already gone: no-op."""
        ...

    def present(self) -> set[str]:
        """Volumes with data (an image, or a half-made one) on this host."""
        ...

    def attached(self) -> set[str]:
        """Volumes whose filesystem is mounted."""
        ...


@dataclass(frozen=True)
class Sweep:
    detach: frozenset[str]
    remove: frozenset[str]


def sweep(
    desired: Mapping[str, DesiredInstance] | None,
    listed: Iterable[str] | None,
    present: set[str],
    attached: set[str],
) -> Sweep:
    """What to detach and remove. Pure.

    A volume any desired instance names (running, stopped or being deleted) is
    kept as it is. Without a desired state or the server's list of this host's
    volumes nothing is removed: an agent that knows nothing deletes nothing.
    """
    if desired is None:
        return Sweep(frozenset(), frozenset())
    used = {v.volume_id for want in desired.values() for v in want.volumes if v.volume_id}
    remove = present - used - set(listed) if listed is not None else set()
    return Sweep(frozenset(attached - used - remove), frozenset(remove))


def _run(*cmd: str) -> str:
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as exc:
        raise PermanentError(
            f"{cmd[0]} is not installed on this host; install e2fsprogs and util-linux"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise TemporaryError(f"{' '.join(cmd)} failed: {exc.stderr.strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise TemporaryError(f"{' '.join(cmd)} timed out") from exc
    return out.stdout


def _mount_points() -> set[str]:
    """Mount points of this mount namespace (octal escapes of /proc decoded)."""
    with open("/proc/self/mountinfo") as f:
        fields = [line.split()[4] for line in f]
    return {p.encode().decode("unicode_escape") for p in fields}


class LoopVolumes:
    """The real store: truncate + mkfs.ext4, losetup, mount."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def image(self, volume_id: str) -> Path:
        return self.root / f"{volume_id}.img"

    def mount_point(self, volume_id: str) -> Path:
        return self.root / volume_id / "mnt"

    def attach(self, volume_id: str, size_mb: int) -> str:
        with self._lock(volume_id):
            img, mnt = self.image(volume_id), self.mount_point(volume_id)
            if not img.exists():
                self._make(img, size_mb)
            if str(mnt) not in _mount_points():
                dev = self._loop(img) or _run("losetup", "--find", "--show", str(img)).strip()
                mnt.mkdir(parents=True, exist_ok=True)
                _run("mount", "-t", "ext4", "-o", "nodev,nosuid", dev, str(mnt))
                log.info("volume %s attached on %s", volume_id, dev)
            data = Path(self.source(volume_id))
            data.mkdir(exist_ok=True)
            return str(data)

    def source(self, volume_id: str) -> str:
        return str(self.mount_point(volume_id) / "data")

    def detach(self, volume_id: str) -> None:
        with self._lock(volume_id):
            self._detach(volume_id)

    def remove(self, volume_id: str) -> None:
        with self._lock(volume_id):
            self._detach(volume_id)
            if str(self.mount_point(volume_id)) in _mount_points():
                raise TemporaryError(f"volume {volume_id} is still mounted; will retry")
            shutil.rmtree(self.root / volume_id, ignore_errors=True)
            for path in (self._part(volume_id), self.image(volume_id)):  # the image last:
                path.unlink(missing_ok=True)  # while it is there, present() lists the volume
            log.info("volume %s removed", volume_id)

    def present(self) -> set[str]:
        return {p.name.split(".", 1)[0] for p in self.root.glob("*.img*")}

    def attached(self) -> set[str]:
        points = _mount_points()
        return {p.name for p in self.root.iterdir() if str(p / "mnt") in points}

    def _detach(self, volume_id: str) -> None:
        mnt = self.mount_point(volume_id)
        if str(mnt) in _mount_points():
            _run("umount", str(mnt))
        img = self.image(volume_id)
        if img.exists():
            for dev in _run("losetup", "-n", "-O", "NAME", "-j", str(img)).split():
                _run("losetup", "-d", dev)
                log.info("volume %s detached from %s", volume_id, dev)

    def _make(self, img: Path, size_mb: int) -> None:
        """A sparse image with an empty ext4, made under another name then renamed:
        a crash leaves a .part (removed as present-but-unlisted) or a whole image."""
        part = self._part(img.name.split(".", 1)[0])
        try:
            with open(part, "wb") as f:
                f.truncate(size_mb * 2**20)
        except OSError as exc:  # e.g. EFBIG: bigger than a file may be here
            part.unlink(missing_ok=True)
            raise PermanentError(
                f"cannot make a {size_mb} MiB volume file under {self.root}: {exc.strerror}; "
                "use a smaller volume"
            ) from exc
        os.chmod(part, 0o600)
        # -m 0: the instance gets the whole size, no blocks kept for root
        _run("mkfs.ext4", "-q", "-F", "-m", "0", str(part))
        os.replace(part, img)

    def _part(self, volume_id: str) -> Path:
        return self.root / f"{volume_id}.img.part"

    def _loop(self, img: Path) -> str | None:
        devices = _run("losetup", "-n", "-O", "NAME", "-j", str(img)).split()
        return devices[0] if devices else None

    def _lock(self, volume_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(volume_id, threading.Lock())


class FakeVolumes:
    """In memory, for unit tests of the worker and the agent."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.mounted: set[str] = set()

    def attach(self, volume_id: str, size_mb: int) -> str:
        self.sizes.setdefault(volume_id, size_mb)
        self.mounted.add(volume_id)
        return self.source(volume_id)

    def source(self, volume_id: str) -> str:
        return f"/fake/volumes/{volume_id}/mnt/data"

    def detach(self, volume_id: str) -> None:
        self.mounted.discard(volume_id)

    def remove(self, volume_id: str) -> None:
        self.detach(volume_id)
        self.sizes.pop(volume_id, None)

    def present(self) -> set[str]:
        return set(self.sizes)

    def attached(self) -> set[str]:
        return set(self.mounted)
