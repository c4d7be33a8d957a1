"""Snapshot orders: commit an instance's root filesystem (and its volumes' data) and
push them to the registry, once per order id.

    DesiredInstance.snapshot (SnapshotOrder) ─► Worker._snapshot ─► Snapshotter.take
        stop      consistent, or power "stopped" (a migration's source)
        commit    driver.commit(instance, push_ref)         -> layers
        flatten   layers >= flatten_at: driver.flatten      -> 1 layer
        push      driver.push(push_ref, login)              -> manifest digest
          or, a migration's order (layer_on: the image in the registry):
        push      transfer.push_layer(upper dir, layer_on)  -> manifest digest, layers
        volumes   transfer.push_volume per named volume     -> VolumeCopy
                  (beside commit/flatten/push, in a thread of its own)
        start     again, if it was stopped here and power says running
    ─► InstanceReport(snapshot=SnapshotDone(..., seconds={stop, commit, ...}))

The local image is removed afterwards, pushed or not: the host keeps nothing of
a snapshot. A refusal (PermanentError) ends the order with ``error`` and the
instance as it was; any other failure starts the instance again and propagates
(the agent retries, then gives up and reports). The worker stores the report
(store.save_snapshot), so a finished order is reported again, never redone.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from dockyard.compute.driver import ComputeDriver
from dockyard.compute.reconcile import power_of
from dockyard.compute.transfer import Transfer
from dockyard.compute.volumes import VolumeStore
from dockyard.errors import DockyardError, PermanentError
from dockyard.model import DesiredInstance, InstanceReport, SnapshotDone, SnapshotOrder, VolumeCopy

log = logging.getLogger(__name__)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def split_ref(ref: str) -> tuple[str, str]:
    """``HOST:PORT/REPO:TAG`` -> (``HOST:PORT/REPO``, ``TAG``); PermanentError without a tag."""
    repository, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or "@" in repository or not _TAG.match(tag):
        raise PermanentError(f"push_ref {ref!r} names no tag: give HOST:PORT/REPO:TAG")
    return repository, tag


def volume_repository(push_ref: str, volume_id: str) -> str:
    """Where a volume's data goes beside the root filesystem's image."""
    return f"{split_ref(push_ref)[0]}-volumes/{volume_id}"


class Snapshotter:
    def __init__(
        self,
        driver: ComputeDriver,
        volumes: VolumeStore,
        transfer: Transfer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver, self.volumes, self.transfer, self._clock = driver, volumes, transfer, clock

    def take(
        self, want: DesiredInstance, stop: Callable[[], None], start: Callable[[], None]
    ) -> InstanceReport:
        """Carry out ``want.snapshot``; ``stop``/``start`` stop (and unplug) and start
        (and plumb) the instance as the worker does. Returns the report to send."""
        order = want.snapshot
        assert order is not None
        obs = self.driver.inspect(want.id)
        if obs is None:
            raise PermanentError(f"instance {want.name} has no container on this host to snapshot")
        seconds: dict[str, float] = {}
        halted = obs.running and (order.consistent or want.power == "stopped")
        if halted:
            with self._timed(seconds, "stop"):
                stop()
        try:
            done = self._commit_and_push(want, order, seconds)
        except PermanentError as exc:
            log.warning("snapshot %s of %s failed: %s", order.id, want.name, exc.detail)
            self._start_again(want, halted, start, seconds)
            return self._report(want, error=exc.detail)
        except BaseException:
            self._start_again(want, halted, start, seconds)
            raise
        self._start_again(want, halted, start, seconds)
        return self._report(want, done=done.model_copy(update={"seconds": seconds}))

    def _commit_and_push(
        self, want: DesiredInstance, order: SnapshotOrder, seconds: dict[str, float]
    ) -> SnapshotDone:
        """The root filesystem and the volumes' data go to the registry at the same
        time (each is timed on its own: "commit"+"flatten"+"push" beside "volumes")."""
        split_ref(order.push_ref)  # a bad ref is refused before anything is made
        with ThreadPoolExecutor(1, thread_name_prefix="volumes") as pool:
            volumes = pool.submit(self._timed_volumes, want, order, seconds)
            try:
                digest, layers, flattened = self._push_rootfs(want, order, seconds)
            finally:
                copies = volumes.result()
        size = self._stored_size(f"{split_ref(order.push_ref)[0]}@{digest}", order)
        log.info("snapshot %s of %s: %s, %d layers", order.id, want.name, digest, layers)
        return SnapshotDone(
            id=order.id,
            digest=digest,
            layers=layers,
            flattened=flattened,
            size=size,
            volumes=copies,
        )

    def _push_rootfs(
        self, want: DesiredInstance, order: SnapshotOrder, seconds: dict[str, float]
    ) -> tuple[str, int, bool]:
        """(digest, layers, flattened): the upper directory as one layer on the image
        (a migration's order, when the container's upper directory is readable here),
        else a docker commit, flattened past ``flatten_at`` layers, and a push."""
        upper = self._upper_dir(want.id) if order.layer_on else None
        if upper is not None and order.layer_on is not None:
            try:
                with self._timed(seconds, "push"):
                    digest, layers = self.transfer.push_layer(
                        upper, order.layer_on, order.push_ref, order.login
                    )
                if layers < order.flatten_at:
                    return digest, layers, False
                log.info("%s has %d layers: committed and flattened instead", want.name, layers)
            except PermanentError as exc:
                log.warning("layer push of %s refused (%s): committing", want.name, exc.detail)
        try:
            with self._timed(seconds, "commit"):
                layers = self.driver.commit(want.id, order.push_ref)
            flattened = layers >= order.flatten_at
            if flattened:
                with self._timed(seconds, "flatten"):
                    layers = self.driver.flatten(order.push_ref)
            with self._timed(seconds, "push"):
                digest = self.driver.push(order.push_ref, order.login)
        finally:
            self._remove_image(order.push_ref)
        return digest, layers, flattened

    def _upper_dir(self, instance_id: str) -> Path | None:
        obs = self.driver.inspect(instance_id)
        found = Path(obs.writable_dir) if obs is not None and obs.writable_dir else None
        return found if found is not None and found.is_dir() else None

    def _timed_volumes(
        self, want: DesiredInstance, order: SnapshotOrder, seconds: dict[str, float]
    ) -> dict[str, VolumeCopy]:
        if not order.volumes:
            return {}
        with self._timed(seconds, "volumes"):
            return self._push_volumes(want, order)

    def _stored_size(self, pull: str, order: SnapshotOrder) -> int:
        """For the report only: a registry that will not say is no failure."""
        try:
            return self.transfer.stored_size(pull, order.login)
        except DockyardError as exc:
            log.info("could not learn the stored size of %s: %s", pull, exc.detail)
            return 0

    def _push_volumes(self, want: DesiredInstance, order: SnapshotOrder) -> dict[str, VolumeCopy]:
        out = {}
        tag = re.sub(r"[^A-Za-z0-9_.-]", "-", f"o{order.id}")
        for v in want.volumes:
            if v.volume_id is None:
                continue  # a host path is the host's, not the instance's
            data = Path(self.volumes.attach(v.volume_id, v.size_mb or 0))
            repository = volume_repository(order.push_ref, v.volume_id)
            out[v.volume_id] = self.transfer.push_volume(data, repository, tag, order.login)
        return out

    def _start_again(
        self,
        want: DesiredInstance,
        halted: bool,
        start: Callable[[], None],
        seconds: dict[str, float],
    ) -> None:
        if halted and want.power == "running":
            with self._timed(seconds, "start"):
                start()

    def _remove_image(self, ref: str) -> None:
        try:
            self.driver.remove_image(ref)
        except Exception as exc:  # a leftover tag is harmless; the order's outcome is not
            log.warning("could not remove the local snapshot image %s: %s", ref, exc)

    def _report(
        self, want: DesiredInstance, done: SnapshotDone | None = None, error: str | None = None
    ) -> InstanceReport:
        return InstanceReport(
            power_state=power_of(self.driver.inspect(want.id)),
            task_done=want.task_state,
            snapshot=done,
            error=error[:512] if error else None,
        )

    @contextmanager
    def _timed(self, seconds: dict[str, float], what: str) -> Iterator[None]:
        began = self._clock()
        try:
            yield
        finally:
            seconds[what] = round(self._clock() - began, 3)
