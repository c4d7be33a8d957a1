"""The Docker driver: the only module that imports the docker SDK.

It uses the SDK's low-level API and addresses containers by name
(``dy-<instance uuid>``), so a create costs three calls (create, start,
inspect) instead of the high-level models' six. ``list`` is one call plus an
inspect only for containers whose state changed since it last looked: an
inspect cache keyed by container id is dropped on every start/die event and
whenever the event stream breaks.

``list`` answers from its last listing, without asking dockerd, while nothing can
have changed since: the event stream was up all along and brought no create, start,
die or destroy, this driver made no container change of its own (counted when its
call returns, so a listing taken during the call is never reused), and the listing
is younger than LISTING_TTL. A busy host lists afresh on nearly every pass; an agent
woken by the server's news alone (a create's first pass, the pass after a report)
does not ask dockerd what it already knows.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from threading import Event
from typing import Any

import docker
import docker.errors
from docker.types import Mount as DockerMount

from dockyard import cgroups
from dockyard.compute.driver import (
    HOST_LABEL,
    LABEL,
    REBUILD_LABEL,
    BuildSpec,
    ContainerEvent,
    ContainerSpec,
    ExecResult,
    FileSpec,
    HostInfo,
    Observed,
    container_name,
)
from dockyard.compute.drivers import docker_files, docker_images
from dockyard.errors import PermanentError, TemporaryError
from dockyard.model import Limits, RegistryLogin

log = logging.getLogger(__name__)
CFS_PERIOD = 100_000  # µs
LISTING_TTL = 2.0  # seconds a listing may answer for dockerd (events lost to a bug)
# the events the caller hears of; create and destroy only make the last listing stale
_NEWS = ("start", "die")
_CONN, _down = docker_images.CONN, docker_images.down


class DockerDriver:
    def __init__(
        self,
        host: str,
        base_url: str | None = None,
        data_root: str | None = None,
        registry_ca: Path | None = None,
    ) -> None:
        """``registry_ca``: before pulling from HOST:PORT, make sure this (local) dockerd
        trusts that CA there (/etc/docker/certs.d/HOST:PORT/ca.crt, see
        docker_images.trust_registry)."""
        self.host = host
        self._labels = [LABEL, f"{HOST_LABEL}={host}"]
        url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.client = docker.DockerClient(base_url=url, timeout=120, max_pool_size=32)
        self.api = self.client.api
        self._data_root = data_root
        self.images = docker_images.DockerImages(self.api, registry_ca)
        self._cache: dict[str, Observed] = {}  # container id -> last inspect
        self._cache_lock = threading.Lock()
        self._changes = 0  # containers' changes seen (events, own calls); under the lock
        self._watching = False  # the event stream is up
        self._listing: tuple[int, float, list[Observed]] | None = None  # changes, at, what

    def _changed(self) -> None:
        """A container may have changed: the last listing no longer answers for dockerd."""
        with self._cache_lock:
            self._changes += 1

    def info(self) -> HostInfo:
        try:
            info = self.api.info()
        except (*_CONN, docker.errors.APIError) as exc:
            raise _down(exc) from exc
        root = self._data_root or info.get("DockerRootDir", "/")
        disk = shutil.disk_usage(root if os.path.exists(root) else "/")
        driver = str(info.get("Driver", ""))
        backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "?")
        return HostInfo(
            cores=int(info["NCPU"]),
            memory_mb=int(info["MemTotal"]) // 2**20,
            disk_gb=disk.total // 2**30,
            runtime_version=str(info.get("ServerVersion", "")),
            root_disk_quota=driver == "overlay2" and backing == "xfs" and _prjquota(root),
            storage=f"{driver} on {backing}",
            facts=_facts(info),
        )

    # --- images (drivers/docker_images.py)

    def ensure_image(
        self,
        ref: str,
        fetch_rootfs: Callable[[Path], None] | None,
        command: list[str] | None,
        pulls: Sequence[str] = (),
        login: RegistryLogin | None = None,
    ) -> None:
        self.images.ensure_image(ref, fetch_rootfs, command, pulls, login)

    def commit(self, instance_id: str, ref: str) -> int:
        return self.images.commit(instance_id, ref)

    def flatten(self, ref: str) -> int:
        return self.images.flatten(ref)

    def push(self, ref: str, login: RegistryLogin | None = None, halt: Event | None = None) -> str:
        return self.images.push(ref, login, halt)

    def remove_image(self, ref: str, prune: bool = True) -> None:
        self.images.remove_image(ref, prune)

    def build(self, spec: BuildSpec, output: Callable[[str], None], halt: Event) -> str:
        return self.images.build(spec, output, halt)

    def layers(self, ref: str) -> int:
        return self.images.layers(ref)


    # --- containers

    def create(self, spec: ContainerSpec) -> Observed:
        try:
            made = self._call(self.api.create_container, **self._create_args(spec))
        except docker.errors.ImageNotFound as exc:
            self.images.forget(spec.image_ref)  # removed behind our back: import again
            raise TemporaryError(f"image {spec.image_ref} vanished from this host") from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # already there (an earlier pass, or a crash)
                return self._inspect_or_fail(spec.instance_id)
            if exc.status_code and 400 <= exc.status_code < 500:
                raise PermanentError(f"dockerd refused the container: {exc.explanation}") from exc
            raise TemporaryError(f"dockerd failed to create the container: {exc}") from exc
        except _CONN as exc:
            raise _down(exc) from exc
        # just created: stopped, nothing more to learn from an inspect
        return Observed(
            spec.instance_id,
            running=False,
            pid=0,
            started_at="",
            container_id=str(made.get("Id", "")),
            rebuild_seq=spec.rebuild_seq,
        )

    def start(self, instance_id: str) -> Observed:
        try:
            self._call(self.api.start, container_name(instance_id))
        except docker.errors.NotFound as exc:
            raise PermanentError(f"no container for instance {instance_id}") from exc
        except docker.errors.APIError as exc:
            if exc.status_code and exc.status_code >= 500:  # dockerd itself in trouble
                raise TemporaryError(f"dockerd could not start the container: {exc}") from exc
            msg = f"dockerd could not start the container: {exc.explanation}"
            raise PermanentError(msg) from exc
        except _CONN as exc:
            raise _down(exc) from exc
        return self._inspect_or_fail(instance_id)

    def stop(self, instance_id: str, timeout: float = 10) -> None:
        try:
            self._call(self.api.stop, container_name(instance_id), timeout=int(timeout))
        except docker.errors.NotFound:
            return
        except (*_CONN, docker.errors.APIError) as exc:
            raise TemporaryError(f"dockerd could not stop the container: {exc}") from exc

    def restart(self, instance_id: str, timeout: float = 10) -> Observed:
        self.stop(instance_id, timeout)
        return self.start(instance_id)

    def put_files(self, instance_id: str, files: Sequence[FileSpec]) -> None:
        """dockerd's archive endpoint unpacks inside the container's root (chrooted):
        a symbolic link in the image resolves there, never on the host."""
        docker_files.put_config(self.api, container_name(instance_id), files)

    def exec(self, instance_id: str, command: Sequence[str], timeout: float) -> ExecResult:
        return docker_files.run(self.api, container_name(instance_id), command, timeout)

    def destroy(self, instance_id: str) -> None:
        try:
            self._call(self.api.remove_container, container_name(instance_id), force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # removal already in progress
                return
            raise TemporaryError(f"dockerd could not remove the container: {exc}") from exc
        except _CONN as exc:
            raise _down(exc) from exc

    def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """``fn`` (a call that changes a container), then the last listing is stale."""
        try:
            return fn(*args, **kw)
        finally:
            self._changed()

    def update_resources(self, spec: ContainerSpec) -> None:
        lim = spec.limits
        capped = lim.cpu_cap is not None and not spec.dedicated
        try:
            self.api.update_container(
                spec.container_name,
                cpu_shares=1024 * spec.vcpus,
                cpuset_cpus=",".join(map(str, spec.cpuset)) or f"0-{self._cores() - 1}",
                cpu_period=CFS_PERIOD,
                cpu_quota=int((lim.cpu_cap or 0) * CFS_PERIOD) if capped else -1,
                mem_limit=spec.memory_mb * 2**20,
                memswap_limit=(spec.memory_mb + lim.swap_mb) * 2**20,
            )
        except docker.errors.NotFound as exc:
            raise PermanentError(f"no container for instance {spec.instance_id}") from exc
        except docker.errors.APIError as exc:
            raise PermanentError(f"dockerd refused the new limits: {exc.explanation}") from exc
        except _CONN as exc:
            raise _down(exc) from exc
        obs = self.inspect(spec.instance_id)
        if obs is not None and obs.running:
            try:
                self._apply_cgroup(spec, obs.pid)
            except (FileNotFoundError, ProcessLookupError) as exc:
                raise TemporaryError(
                    f"the container of {spec.instance_id} stopped while its limits were "
                    "applied; will retry"
                ) from exc

    def _apply_cgroup(self, spec: ContainerSpec, pid: int) -> None:
        """The pids limit and disk IO throttles, live in the cgroup: dockerd's update
        cannot change them, so they are re-applied after every start."""
        lim = spec.limits
        cg = cgroups.of_pid(pid)
        cgroups.set_pids_max(cg, spec.pids_limit)
        paths = [self._root_dir(), *(m.source for m in spec.mounts if not m.managed)]
        # written also without limits ("no limit" rules): on recent kernels the cgroup's
        # per-disk IO counters, which the /proc/diskstats view shows, stay at zero until a
        # throttle rule was written for that disk once
        for dev in _block_devices(paths, required=_has_io(lim)):
            st = os.stat(dev)
            majmin = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            cgroups.set_io_limits(
                cg,
                majmin,
                lim.disk_read_bps,
                lim.disk_write_bps,
                lim.disk_read_iops,
                lim.disk_write_iops,
            )

    def _cores(self) -> int:
        return self.info().cores

    def inspect(self, instance_id: str) -> Observed | None:
        return self._inspect(container_name(instance_id))

    def _fresh_listing(self) -> list[Observed]:
        try:
            summaries = self.api.containers(all=True, filters={"label": self._labels})
        except (*_CONN, docker.errors.APIError) as exc:
            raise _down(exc) from exc
        out, seen = [], set()
        for summary in summaries:
            cid = summary["Id"]
            seen.add(cid)
            with self._cache_lock:
                cached = self._cache.get(cid)
            if cached is None or cached.running != (summary.get("State") == "running"):
                cached = self._inspect(cid)
            if cached is not None:
                out.append(cached)
        with self._cache_lock:
            for cid in set(self._cache) - seen:
                del self._cache[cid]
        return out

    def list(self) -> list[Observed]:
        now = time.monotonic()
        with self._cache_lock:
            changes, last, watching = self._changes, self._listing, self._watching
        unchanged = last is not None and last[0] == changes and now - last[1] < LISTING_TTL
        if watching and last is not None and unchanged:
            return list(last[2])
        out = self._fresh_listing()
        with self._cache_lock:
            self._listing = (changes, now, out)  # stale at once if anything changed meanwhile
        return list(out)

    def events(self, stop: Event) -> Iterator[ContainerEvent]:
        events = [*_NEWS, "create", "destroy"]
        filters = {"type": "container", "label": self._labels, "event": events}
        try:
            stream = self.api.events(decode=True, filters=filters)
        except (*_CONN, docker.errors.APIError) as exc:
            raise TemporaryError(f"dockerd event stream unavailable: {exc}") from exc
        try:
            with self._cache_lock:  # a listing from before the stream was up answers for nothing
                self._watching = True
                self._changes += 1
            yield ContainerEvent()  # subscribed: events before this moment were missed
            for ev in stream:
                with self._cache_lock:
                    self._cache.pop(ev.get("id", ""), None)
                    self._changes += 1
                if stop.is_set():
                    return
                attrs = ev.get("Actor", {}).get("Attributes", {})
                action = ev.get("Action", ev.get("status"))
                if LABEL in attrs and action in _NEWS:
                    yield ContainerEvent(attrs[LABEL], action)
        except (*_CONN, docker.errors.APIError) as exc:
            raise TemporaryError(f"dockerd event stream broke: {exc}") from exc
        finally:
            with self._cache_lock:
                self._watching = False
                self._cache.clear()  # events may be missed until we reconnect
                self._changes += 1
            stream.close()
        raise TemporaryError("dockerd closed the event stream")

    def _inspect(self, name_or_id: str) -> Observed | None:
        try:
            attrs = self.api.inspect_container(name_or_id)
        except docker.errors.NotFound:
            return None
        except (*_CONN, docker.errors.APIError) as exc:
            raise _down(exc) from exc
        obs = _observed(attrs)
        with self._cache_lock:
            self._cache[attrs["Id"]] = obs
        return obs

    def _inspect_or_fail(self, instance_id: str) -> Observed:
        obs = self.inspect(instance_id)
        if obs is None:
            raise TemporaryError(f"the container of {instance_id} disappeared; will retry")
        return obs

    def _create_args(self, spec: ContainerSpec) -> dict[str, Any]:
        mounts = [
            DockerMount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ]
        lim = spec.limits
        cpu: dict[str, Any] = {"cpu_shares": 1024 * spec.vcpus}
        if spec.cpuset:  # its own cores, or the shared pool
            cpu["cpuset_cpus"] = ",".join(str(c) for c in spec.cpuset)
        if lim.cpu_cap is not None and not spec.dedicated:
            cpu.update(cpu_period=CFS_PERIOD, cpu_quota=int(lim.cpu_cap * CFS_PERIOD))
        if spec.disk_gb:  # the scheduler sends these only to hosts that can enforce it
            cpu["storage_opt"] = {"size": f"{spec.disk_gb}G"}
        host_config = self.api.create_host_config(
            network_mode="none",
            mounts=mounts,
            mem_limit=f"{spec.memory_mb}m",
            memswap_limit=f"{spec.memory_mb + lim.swap_mb}m",  # no swap unless the flavor says
            pids_limit=spec.pids_limit,
            restart_policy={"Name": "no"},  # the agent owns restarts
            **cpu,
            **self._blkio(spec),
        )
        return {
            "image": spec.image_ref,
            "name": spec.container_name,
            "hostname": spec.hostname,
            "labels": {
                LABEL: spec.instance_id,
                HOST_LABEL: self.host,
                "dockyard.name": spec.name,
                REBUILD_LABEL: str(spec.rebuild_seq),
            },
            "command": spec.command,
            "environment": [f"{k}={v}" for k, v in spec.env.items()] or None,
            "detach": True,
            # a netns of the container's own from runc (lo up), and none of libnetwork's:
            # no sandbox, no /var/run/docker/netns file, no `libnetwork-setkey` prestart
            # hook (dockerd re-executing itself for every start), which is about half of
            # dockerd's create + start (bench/docker_start.py); the agent plumbs eth0
            "network_disabled": True,
            "host_config": host_config,
        }

    def _blkio(self, spec: ContainerSpec) -> dict[str, Any]:
        """Throttles on every block device behind the root filesystem and the volumes."""
        lim = spec.limits
        wanted = {
            "device_read_bps": lim.disk_read_bps,
            "device_write_bps": lim.disk_write_bps,
            "device_read_iops": lim.disk_read_iops,
            "device_write_iops": lim.disk_write_iops,
        }
        wanted = {k: v for k, v in wanted.items() if v is not None}
        if not wanted:
            return {}
        paths = [self._root_dir(), *(m.source for m in spec.mounts if not m.managed)]
        # dockerd looks a throttled device up again on every start, and a volume's loop
        # device may have another number after a reboot: those the agent sets after each
        # start (_apply_cgroup), and only the stable disks go into the container's config
        devices = sorted({d for d in map(block_device, paths) if not _is_loop(d)})
        return {k: [{"Path": d, "Rate": v} for d in devices] for k, v in wanted.items()}

    def data_root(self) -> str:
        """dockerd's data root (offline recovery reads containers' layers under it).
        Raises TemporaryError while dockerd does not answer and it was never learnt."""
        return self._root_dir()

    def _root_dir(self) -> str:
        if self._data_root is None:
            try:
                self._data_root = str(self.api.info()["DockerRootDir"])
            except (*_CONN, docker.errors.APIError) as exc:
                raise _down(exc) from exc
        return self._data_root


def _prjquota(path: str) -> bool:
    """Is ``path`` on a filesystem mounted with project quotas (what overlay2 needs)?"""
    best, opts = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, point, _, options, *_ = line.split()
        if path.startswith(point) and len(point) > len(best):
            best, opts = point, options
    return "prjquota" in opts or "pquota" in opts


def _has_io(lim: Limits) -> bool:
    return any(
        v is not None
        for v in (lim.disk_read_bps, lim.disk_write_bps, lim.disk_read_iops, lim.disk_write_iops)
    )


def _block_devices(paths: list[str], required: bool) -> list[str]:
    """The whole disks behind ``paths``; unless ``required``, paths on no block
    device (tmpfs, network filesystems) are left out instead of refused."""
    out = set()
    for path in paths:
        try:
            out.add(block_device(path))
        except PermanentError:
            if required:
                raise
    return sorted(out)


def _is_loop(device: str) -> bool:
    return Path(device).name.startswith("loop")


def block_device(path: str) -> str:
    """The whole-disk device (e.g. /dev/vda) holding ``path``; PermanentError if none."""
    st = os.stat(path)
    sys_dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not sys_dev.exists():
        raise PermanentError(
            f"disk IO limits cannot be enforced on this host: {path} is not on a block device "
            "(tmpfs, overlay or network filesystem); use a flavor without disk limits"
        )
    node = sys_dev.resolve()
    if (node / "partition").exists():  # throttles apply to whole disks
        node = node.parent
    return f"/dev/{node.name}"


def _facts(info: dict[str, Any]) -> dict[str, str]:
    """What of ``docker info`` the host's baseline holds: the runtime's version and the
    settings Dockyard relies on (lower case, as the other hosts report them)."""

    def word(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    keys = {
        "dockerd.version": "ServerVersion",
        "dockerd.storage_driver": "Driver",
        "dockerd.live_restore": "LiveRestoreEnabled",
        "dockerd.cgroup_driver": "CgroupDriver",
        "dockerd.ipv4_forwarding": "IPv4Forwarding",
        "dockerd.bridge_nf_iptables": "BridgeNfIptables",
        "dockerd.default_runtime": "DefaultRuntime",
    }
    return {k: word(info[v]) for k, v in keys.items() if v in info}


def _observed(attrs: dict[str, Any]) -> Observed:
    st = attrs.get("State", {})
    labels = attrs.get("Config", {}).get("Labels") or {}
    return Observed(
        instance_id=labels.get(LABEL, ""),
        running=bool(st.get("Running")),
        pid=int(st.get("Pid") or 0),
        started_at=str(st.get("StartedAt", "")),
        exit_code=int(st.get("ExitCode") or 0),
        oom_killed=bool(st.get("OOMKilled")),
        writable_dir=str(((attrs.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir", "")),
        mounts=tuple(
            (str(mt.get("Source", "")), str(mt.get("Destination", "")), not mt.get("RW", True))
            for mt in attrs.get("Mounts") or []
        ),
        container_id=str(attrs.get("Id", "")),
        rebuild_seq=_int(labels.get(REBUILD_LABEL)),
    )


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
