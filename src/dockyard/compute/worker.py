"""Carry out one reconcile step for one instance, then tell the server."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dockyard.compute import procfs
from dockyard.compute.client import Server
from dockyard.compute.driver import (
    ComputeDriver,
    ContainerSpec,
    FileSpec,
    Mount,
    Observed,
    resources_key,
)
from dockyard.compute.monitor import Meter
from dockyard.compute.plumber import Plumber
from dockyard.compute.procfs import ViewWriter
from dockyard.compute.reconcile import Step, power_of, spec_of
from dockyard.compute.snapshots import Snapshotter
from dockyard.compute.store import Record, Store
from dockyard.compute.transfer import RegistryTransfer, Transfer
from dockyard.compute.volumes import VolumeStore, sweep
from dockyard.errors import DockyardError, PermanentError, TemporaryError
from dockyard.model import (
    DesiredInstance,
    Health,
    ImageSource,
    InstanceReport,
    PowerState,
    TaskState,
    VolumeAttachment,
    VolumeCopy,
)
from dockyard.model.health import clash_with_mounts
from dockyard.model.health import counts as health_counts

log = logging.getLogger(__name__)
CREATED = "created"  # Record.applied_for before the first start
# the same report of the same desired instance is not sent again within this many
# seconds (see Worker._send_report); after it, it is (a server that lost it, say)
REPORT_AGAIN_AFTER = 30.0
# fault injection for the restart tests: stall between create and start
_PAUSE_AFTER_CREATE = float(os.environ.get("DOCKYARD_FAULT_PAUSE_AFTER_CREATE", "0"))


class Worker:
    """Each host-facing part comes in through a protocol (driver, plumber, view writer,
    meter, volumes), so a worker of fakes runs without root (tests/unit/test_worker.py)."""

    def __init__(
        self,
        driver: ComputeDriver,
        client: Server,
        store: Store,
        *,
        plumber: Plumber,
        views: ViewWriter,
        meter: Meter,
        volumes: VolumeStore,
        transfer: Transfer | None = None,
        health: Callable[[str, str], Health | None] | None = None,
    ) -> None:
        """``health(instance id, started_at)``: the health its checker last saw of that
        container start, for reports."""
        self.driver, self.client, self.store = driver, client, store
        self._health = health or (lambda _iid, _started: None)
        self.plumber, self.views, self.meter, self.volumes = plumber, views, meter, volumes
        self.transfer = transfer or RegistryTransfer()
        self.snapshots = Snapshotter(driver, volumes, self.transfer)
        self.clock: Callable[[], float] = time.monotonic
        # per instance: the desired state and the report last sent for it, and when
        self._sent: dict[str, tuple[DesiredInstance, InstanceReport, float]] = {}

    def run(self, step: Step, want: DesiredInstance) -> bool:
        """Do ``step``. A PermanentError is reported to the user (then False); others
        propagate."""
        try:
            getattr(self, f"_{step.value}")(want)
        except PermanentError as exc:
            log.warning("%s %s failed: %s", step.value, want.name, exc.detail)
            self._fail(step, want, exc.detail)
            return False
        return True

    def _spawn(self, want: DesiredInstance) -> None:
        # the pull and a moved instance's volume restores both wait on the registry:
        # side by side, not one after the other
        with ThreadPoolExecutor(1, thread_name_prefix="pull") as pool:
            pulled = pool.submit(self._ensure_image, want)
            try:
                files = self._write_files(want)
                if want.limits.procview:
                    self._prepare_procview(want)
                self._attach_volumes(want)
            finally:
                pulled.result()
        obs = self._create(want, files)
        if _PAUSE_AFTER_CREATE:
            time.sleep(_PAUSE_AFTER_CREATE)
        self._start(want, obs, made=True)

    def _create(
        self, want: DesiredInstance, files: dict[str, Path], snapshot_done: str = ""
    ) -> Observed:
        """A stopped container with its config files in, and its record."""
        spec = self._spec(want, files)
        obs = self.driver.create(spec)
        self._put_config(want, spec, obs)
        # created with its limits: they hold for the first start without an update, but
        # for disk IO on loop devices (volumes), whose throttles follow each start
        self.store.save(
            Record(
                want.id,
                reboot_seq=want.reboot_seq,
                applied="" if want.volumes else resources_key(spec),
                applied_for=CREATED,
                snapshot_done=snapshot_done,
                files_for=obs.container_id,
            )
        )
        return obs

    def _put_config(self, want: DesiredInstance, spec: ContainerSpec, obs: Observed) -> None:
        """DesiredInstance.files into the container's root fs (before its first start)."""
        _no_clash(want, spec)
        files = [FileSpec(f.path, f.content.encode(), f.mode) for f in want.files]
        self.driver.put_files(want.id, files)

    def _start(
        self,
        want: DesiredInstance,
        obs: Observed | None = None,
        *,
        report: bool = True,
        made: bool = False,
    ) -> None:
        """``made``: ``_spawn`` has just written its files and view, attached its volumes
        and created the container with its config: nothing of that to check again."""
        if obs is None or not obs.running:
            if not made:
                self._ready(want, obs)
            obs = self._start_and_prepare(want)
            self._plumb(want, obs, prepared=True, report=report)
        else:
            self._plumb(want, obs, report=report)

    def _ready(self, want: DesiredInstance, obs: Observed | None) -> None:
        """What a container that was made earlier needs before it starts again."""
        self._write_files(want)  # they may have been lost with the disk
        self._config_once(want, obs)
        if (
            want.limits.procview
            and not procfs.files(self.store.files_dir(want.id))["/proc/meminfo"].exists()
        ):
            self._prepare_procview(want)
        self._attach_volumes(want)  # gone after a reboot: the mount, the loop device

    def _start_and_prepare(self, want: DesiredInstance) -> Observed:
        """dockerd's start and the network's part that needs no running container (the
        bridge, the port's rules) at the same time: the latter costs no wall time."""
        with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool:
            prepared = pool.submit(self.plumber.prepare, want.id, want.net)
            obs = self.driver.start(want.id)
            prepared.result()
        return obs

    def _plumb(
        self,
        want: DesiredInstance,
        obs: Observed | None = None,
        *,
        prepared: bool = False,
        report: bool = True,
    ) -> None:
        obs = obs or self.driver.inspect(want.id)
        if obs is None or not obs.running:
            return  # it died meanwhile: the next pass starts it
        host_if = self.plumber.plumb(want.id, obs.pid, want.net, prepared=prepared)
        self.plumber.shape(want.id, want.limits, fresh=True)  # plumb made a new veth
        rec = self.store.record(want.id)
        spec = self._spec(want)
        if rec.applied != resources_key(spec) or rec.applied_for not in (CREATED, obs.started_at):
            self.driver.update_resources(spec)  # cgroup-only limits reset with a restart
        rec.plumbed_for, rec.host_if = obs.started_at, host_if
        rec.applied, rec.applied_for = resources_key(spec), obs.started_at
        rec.fenced = False  # running here again: a later fence is reported anew
        self.store.save(rec)
        if report:
            self._report(want, obs)

    def _update(self, want: DesiredInstance) -> None:
        """New limits on the running instance (a resize), without a restart."""
        obs = self.driver.inspect(want.id)
        if obs is None or not obs.running:
            return  # the next pass starts it, with the new limits
        used = self.meter.memory_used(want.id, obs.pid)
        if want.memory_mb * 2**20 < used:
            raise PermanentError(
                f"cannot shrink memory to {want.memory_mb} MB: the instance uses "
                f"{used / 2**20:.0f} MB now; free memory inside it or pick a larger flavor"
            )
        spec = self._spec(want)
        self.driver.update_resources(spec)
        self.plumber.shape(want.id, want.limits)
        rec = self.store.record(want.id)
        rec.applied, rec.applied_for = resources_key(spec), obs.started_at
        self.store.save(rec)
        self._report(want, obs)

    def _config_once(self, want: DesiredInstance, obs: Observed | None) -> None:
        """A container created but never given its config files (an agent stopped in
        between): they go in now, before it starts."""
        rec = self.store.record(want.id)
        obs = obs or self.driver.inspect(want.id)
        if obs is None or rec.files_for == obs.container_id:
            return
        self._put_config(want, self._spec(want), obs)
        rec.files_for = obs.container_id
        self.store.save(rec)

    def _rebuild(self, want: DesiredInstance) -> None:
        """A new container from the desired image, env and files, the same identity: name,
        hostname, IP and MAC (plumbed again), volumes, limits, /proc view. The image is
        pulled first: a pull that fails leaves the old container running, reported once
        per rebuild_seq and retried. Stopped half-way, the next pass finishes it: no
        container is a spawn, a created one a start (both with the new rebuild_seq)."""
        rec = self.store.record(want.id)
        try:
            self._ensure_image(want)
        except DockyardError as exc:
            self._rebuild_failed(want, rec, exc)
        files = self._write_files(want)
        if want.limits.procview:
            self._prepare_procview(want)
        self._attach_volumes(want)
        # all that can be checked without the new container, before the old one goes;
        # what fails after (dockerd refusing the files) is reported with the task, and
        # the instance stays down with the new container until the files are fixed
        _no_clash(want, self._spec(want, files))
        self._halt(want)
        self.driver.destroy(want.id)
        obs: Observed | None = self._create(want, files, rec.snapshot_done)
        if want.power == "running":
            self._start(want, obs, report=False)
            obs = self.driver.inspect(want.id)
        log.info("%s rebuilt from %s (rebuild %d)", want.name, want.image_ref, want.rebuild_seq)
        self.tell(want.id, self._state(want, obs, task_done=TaskState.rebuilding))

    def _rebuild_failed(self, want: DesiredInstance, rec: Record, exc: DockyardError) -> None:
        obs = self.driver.inspect(want.id)
        message = f"rebuild {want.rebuild_seq} could not get image {want.image_ref}: {exc.detail}"
        if rec.rebuild_failed != want.rebuild_seq:
            rep = self._state(want, obs, task_done=TaskState.rebuilding, error=message[:512])
            self.tell(want.id, rep)
            rec.rebuild_failed = want.rebuild_seq
            self.store.save(rec)
        raise TemporaryError(f"{message}; the old container keeps running, will retry") from exc

    def _drop_half_rebuilt(self, want: DesiredInstance) -> None:
        """A rebuild failed after the old container went: the new one, never started
        (its files refused), goes too. The server puts the previous image and settings
        back; the next pass spawns them (no container is a spawn), rather than starting
        the new image with the old files."""
        obs = self.driver.inspect(want.id)
        if obs is not None and obs.rebuild_seq == want.rebuild_seq and not obs.running:
            log.warning("%s: rebuild %d failed half-way; its new container is removed",
                        want.name, want.rebuild_seq)  # fmt: skip
            self.driver.destroy(want.id)
            self.plumber.unplumb(want.id)

    def _state(self, want: DesiredInstance, obs: Observed | None, **kw: object) -> InstanceReport:
        """A report of what is: power, the rebuild the container was made for, health
        (None unless the container wanted runs: a stopped instance, or the old container
        while a rebuild lasts, has no health to show; a new start is "starting"; after a
        failed rebuild the old container that runs on is the instance)."""
        rebuilding = want.task_state == TaskState.rebuilding
        current = (
            obs is not None
            and obs.running
            and health_counts(obs.rebuild_seq, want.rebuild_seq, rebuilding)
        )
        return InstanceReport.model_validate(
            {
                "power_state": power_of(obs),
                "rebuilt_seq": obs.rebuild_seq if obs is not None else None,
                "health": self._health(want.id, obs.started_at) if current and obs else None,
                **kw,
            }
        )

    def _reboot(self, want: DesiredInstance) -> None:
        self._attach_volumes(want)
        obs = self.driver.restart(want.id)
        rec = self.store.record(want.id)
        rec.reboot_seq = want.reboot_seq
        self.store.save(rec)
        self._plumb(want, obs)

    def _stop(self, want: DesiredInstance) -> None:
        self._halt(want)
        self._report(want, self.driver.inspect(want.id))

    def _snapshot(self, want: DesiredInstance) -> None:
        """Carry out the snapshot order once; a finished one is reported again as it was."""
        order = want.snapshot
        assert order is not None
        done = self.store.snapshot(want.id, order.id)
        if done is None:
            done = self.snapshots.take(
                want, stop=lambda: self._halt(want), start=lambda: self._start(want, report=False)
            )
            self.store.save_snapshot(want.id, order.id, done)
            rec = self.store.record(want.id)
            rec.snapshot_done = order.id
            self.store.save(rec)
        self.tell(want.id, done)

    def _halt(self, want: DesiredInstance) -> None:
        self.driver.stop(want.id)
        self.plumber.unplumb(want.id)

    def _fence(self, want: DesiredInstance) -> None:
        """Evacuated: it lives on another host now. Stopped and unplugged here, never
        started; the container, its writable layer and its volumes stay for recovery
        until the server drops it (then the orphan clean-up removes them)."""
        self._halt(want)
        rec = self.store.record(want.id)
        if not rec.fenced:
            power = power_of(self.driver.inspect(want.id))
            self.tell(want.id, InstanceReport(power_state=power, fenced=True))
            rec.fenced = True
            self.store.save(rec)

    def _destroy(self, want: DesiredInstance) -> None:
        self.destroy(want.id)
        self.tell(want.id, InstanceReport(power_state=PowerState.nostate, gone=True))

    def _report(self, want: DesiredInstance, obs: Observed | None = None) -> None:
        """The host now matches ``want``: finish its task, or correct the power state."""
        obs = obs if obs is not None else self.driver.inspect(want.id)
        if want.task_state is None and want.power_state == power_of(obs):
            return
        self._send_report(want, self._state(want, obs, task_done=want.task_state))

    def reported(self, want: DesiredInstance, obs: Observed | None) -> bool:
        """A report step for ``want`` with ``obs`` would send nothing (see _send_report)."""
        return self._said(want, self._state(want, obs, task_done=want.task_state))

    def tell(self, instance_id: str, report: InstanceReport) -> None:
        """Send a report that is no step's settling one (a health change, a failure, a
        fence): it may move the server's state anywhere, so the next settling report
        goes whatever was sent before."""
        self._sent.pop(instance_id, None)
        self.client.report(instance_id, report)

    def _said(self, want: DesiredInstance, report: InstanceReport) -> bool:
        last = self._sent.get(want.id)
        return (
            last is not None
            and last[:2] == (want, report)
            and self.clock() - last[2] < REPORT_AGAIN_AFTER
        )

    def _send_report(self, want: DesiredInstance, report: InstanceReport) -> None:
        """Send ``report``, unless it was just sent for the same desired instance.

        A step's report changes the server's desired state, but until the agent has
        that, any other change on the host (twenty creates at once) starts a pass that
        still sees the task waiting and plans the report again: every spawn in a burst
        was reported twice, and each report bumps the host's generation and so another
        read of the whole desired state. A report the server may have lost (its
        database restored, say) goes again after REPORT_AGAIN_AFTER seconds."""
        if self._said(want, report):
            log.debug("%s: the same report as just sent, not sent again", want.name)
            return
        self.client.report(want.id, report)
        self._sent[want.id] = (want, report, self.clock())

    def destroy(self, instance_id: str) -> None:
        """After: no container, veth, port rule or file of the instance. Idempotent.

        The record goes last: an agent stopped half-way finds the instance an orphan
        again and finishes the job."""
        self.driver.destroy(instance_id)
        self.plumber.unplumb(instance_id)
        self.store.forget(instance_id)
        self.views.forget(instance_id)
        self._sent.pop(instance_id, None)

    def run_failed(self, step: Step, want: DesiredInstance, message: str) -> None:
        """Give up on ``step``: clean up as after a permanent error and report it."""
        self._fail(step, want, message)

    def _fail(self, step: Step, want: DesiredInstance, message: str) -> None:
        if step == Step.spawn:
            self.destroy(want.id)  # a failed spawn leaves nothing behind
        if step == Step.rebuild or want.task_state == TaskState.rebuilding:
            self._drop_half_rebuilt(want)
        obs = self.driver.inspect(want.id)
        task = want.task_state or (TaskState.spawning if step == Step.spawn else None)
        if step == Step.rebuild:
            task = TaskState.rebuilding
        report = self._state(want, obs, task_done=task, error=message[:512])
        if step == Step.rebuild:  # refused for good: tried again when rebuild_seq changes
            rec = self.store.record(want.id)
            rec.rebuild_refused = want.rebuild_seq
            self.store.save(rec)
        if step == Step.snapshot and want.snapshot is not None:  # the order ended: not redone
            self.store.save_snapshot(want.id, want.snapshot.id, report)
            rec = self.store.record(want.id)
            rec.snapshot_done = want.snapshot.id
            self.store.save(rec)
        self.tell(want.id, report)

    def _ensure_image(self, want: DesiredInstance) -> None:
        fetch = None
        # an image in the registry is pulled by digest, never fetched through the server
        if want.image_source == ImageSource.rootfs and not want.image_pulls:

            def fetch(dest: Path) -> None:
                # checked before the driver imports it: a damaged tarball never runs
                self.client.download_image(want.image_id, dest, want.image_sha256)

        if want.image_pulls:
            self.driver.ensure_image(
                want.image_ref, None, want.command, want.image_pulls, want.image_pull_login
            )
        else:
            self.driver.ensure_image(want.image_ref, fetch, want.command)

    def _write_files(self, want: DesiredInstance) -> dict[str, Path]:
        """/etc/hosts and friends, and the view directory with root's ssh keys."""
        files = self.store.write_files(want)
        procfs.write_keys(self.store.files_dir(want.id), want.ssh_keys)
        return files

    def _prepare_procview(self, want: DesiredInstance) -> None:
        self.views.prepare(
            self.store.files_dir(want.id), want.memory_mb, want.limits.swap_mb, want.cpuset or [0]
        )

    def _spec(self, want: DesiredInstance, files: dict[str, Path] | None = None) -> ContainerSpec:
        files = files if files is not None else self.store.managed_files(want.id)
        if want.limits.procview:
            files = {**files, **procfs.files(self.store.files_dir(want.id))}
        mounts = [Mount(str(src), target, managed=True) for target, src in files.items()]
        view = procfs.view_dir(self.store.files_dir(want.id))
        mounts.append(Mount(str(view), procfs.VIEW_TARGET, read_only=True, managed=True))
        mounts += [Mount(self._source(v), v.path, v.read_only) for v in want.volumes]
        return dataclasses.replace(spec_of(want), mounts=mounts)

    # --- named volumes (compute/volumes.py)

    def _source(self, mount: VolumeAttachment) -> str:
        if mount.volume_id is not None:
            return self.volumes.source(mount.volume_id)
        assert mount.host_path is not None
        return mount.host_path

    def _attach_volumes(self, want: DesiredInstance) -> None:
        for v in want.volumes:
            if v.volume_id is None:
                continue
            source = want.volume_sources.get(v.volume_id)
            fresh = v.volume_id not in self.volumes.present()
            if source is not None and (fresh or self.store.restoring(v.volume_id).exists()):
                self._restore_volume(want, v.volume_id, v.size_mb or 0, source)
            else:
                self.volumes.attach(v.volume_id, v.size_mb or 0)

    def _restore_volume(
        self, want: DesiredInstance, volume_id: str, size_mb: int, source: VolumeCopy
    ) -> None:
        """A move's target: the volume made afresh and filled from its copy before its
        first attach here. The marker makes a crash half-way start over; a copy that does
        not check out leaves no volume behind (and the spawn fails)."""
        marker = self.store.restoring(volume_id)
        marker.touch()
        self.volumes.remove(volume_id)  # what a crash half-way left, if anything
        try:
            data = Path(self.volumes.attach(volume_id, size_mb))
            self.transfer.restore_volume(source, data, want.image_pull_login)
        except BaseException:
            self.volumes.remove(volume_id)
            marker.unlink(missing_ok=True)
            raise
        marker.unlink()
        log.info("volume %s restored from %s", volume_id, source.pull)

    def sweep_volumes(
        self, desired: dict[str, DesiredInstance] | None, listed: list[str] | None
    ) -> None:
        """Detach volumes no desired instance uses; remove those the server dropped too."""
        todo = sweep(desired, listed, self.volumes.present(), self.volumes.attached())
        for volume_id, undo in [(v, self.volumes.detach) for v in todo.detach] + [
            (v, self.volumes.remove) for v in todo.remove
        ]:
            try:
                undo(volume_id)
            except DockyardError as exc:
                log.warning("volume %s: %s; will retry", volume_id, exc.detail)


# the kernel's and the agent's: a file there is hidden by a mount or is not a file at all
_RESERVED = ("/proc", "/sys", "/dev", procfs.VIEW_TARGET)


def _under(path: str, top: str) -> bool:
    top = top.rstrip("/") or "/"
    return path == top or path.startswith(top + "/") or top == "/"


def _no_clash(want: DesiredInstance, spec: ContainerSpec) -> None:
    """A config file where the agent bind-mounts a file of its own would be hidden (or
    written through to the agent's copy): refused. So is one at or under a volume's mount
    point (it would be written into the volume, or replace the mount point and with it,
    in older dockerds, the host's data) or under /proc, /sys, /dev, /run/dockyard."""
    managed = {m.target for m in spec.mounts if m.managed}
    clash = sorted(f.path for f in want.files if f.path in managed)
    if clash:
        raise PermanentError(
            f"{', '.join(clash)}: the agent writes these itself (the instance's hosts, "
            "DNS and /proc view); put the config file elsewhere"
        )
    over_volume = clash_with_mounts(want.files, [v.path for v in want.volumes])
    if over_volume:  # the server's own rule, again for what an older server let through
        raise PermanentError(over_volume)
    for f in want.files:
        path = "/" + f.path.strip("/")
        for top in _RESERVED:
            if _under(path, top):
                raise PermanentError(
                    f"{f.path}: a config file may not be under {top} (the kernel's or the "
                    "agent's); put it elsewhere"
                )
