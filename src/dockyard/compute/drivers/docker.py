"""The Docker driver: the only module that imports the docker SDK."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from threading import Event
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import Mount as DockerMount

from dockyard.compute.driver import (
    HOST_LABEL,
    LABEL,
    ContainerSpec,
    HostInfo,
    Observed,
    container_name,
)
from dockyard.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)
_DOWN = (requests.exceptions.ConnectionError, docker.errors.APIError)


class DockerDriver:
    def __init__(
        self, host: str, base_url: str | None = None, data_root: str | None = None
    ) -> None:
        self.host = host
        self._labels = [LABEL, f"{HOST_LABEL}={host}"]
        url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.client = docker.DockerClient(base_url=url, timeout=120, max_pool_size=32)
        self._data_root = data_root
        self._image_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def info(self) -> HostInfo:
        try:
            info = self.client.info()
        except _DOWN as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc
        root = self._data_root or info.get("DockerRootDir", "/")
        disk = shutil.disk_usage(root if os.path.exists(root) else "/")
        return HostInfo(
            cores=int(info["NCPU"]),
            memory_mb=int(info["MemTotal"]) // 2**20,
            disk_gb=disk.total // 2**30,
            runtime_version=str(info.get("ServerVersion", "")),
        )

    def ensure_image(
        self, ref: str, fetch_rootfs: Callable[[Path], None] | None, command: list[str] | None
    ) -> None:
        with self._guard:
            lock = self._image_locks.setdefault(ref, threading.Lock())
        with lock:
            if self._has_image(ref):
                return
            if fetch_rootfs is None:
                raise PermanentError(
                    f"image {ref} is not on this host's dockerd; load it there or import "
                    "the image with --rootfs so hosts can fetch it"
                )
            self._import(ref, fetch_rootfs, command)

    def _has_image(self, ref: str) -> bool:
        try:
            self.client.images.get(ref)
            return True
        except docker.errors.ImageNotFound:
            return False
        except _DOWN as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc

    def _import(self, ref: str, fetch: Callable[[Path], None], command: list[str] | None) -> None:
        repo, _, tag = ref.rpartition(":")
        changes = [f"CMD {_json(command)}"] if command else None
        with tempfile.TemporaryDirectory(prefix="dockyard-image-") as tmp:
            path = Path(tmp) / "rootfs.tar"
            fetch(path)
            try:
                self.client.api.import_image_from_file(
                    str(path), repository=repo, tag=tag, changes=changes
                )
            except docker.errors.APIError as exc:
                raise PermanentError(f"dockerd refused the rootfs of {ref}: {exc}") from exc
        log.info("imported image %s", ref)

    def create(self, spec: ContainerSpec) -> Observed:
        existing = self.inspect(spec.instance_id)
        if existing is not None:
            return existing
        kwargs = _create_kwargs(spec, self.host)
        try:
            c = self.client.containers.create(**kwargs)
        except docker.errors.ImageNotFound as exc:
            raise PermanentError(f"image {spec.image_ref} is missing on this host") from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # created concurrently by an earlier pass
                found = self.inspect(spec.instance_id)
                if found:
                    return found
            if exc.status_code and 400 <= exc.status_code < 500:
                raise PermanentError(f"dockerd refused the container: {exc.explanation}") from exc
            raise TemporaryError(f"dockerd failed to create the container: {exc}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc
        return _observed(c)

    def start(self, instance_id: str) -> Observed:
        c = self._get(instance_id)
        if c is None:
            raise PermanentError(f"no container for instance {instance_id}")
        try:
            c.start()
            c.reload()
        except docker.errors.APIError as exc:
            if exc.status_code and exc.status_code >= 500:  # dockerd itself in trouble
                raise TemporaryError(f"dockerd could not start the container: {exc}") from exc
            raise PermanentError(
                f"dockerd could not start the container: {exc.explanation}"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc
        return _observed(c)

    def stop(self, instance_id: str, timeout: float = 10) -> None:
        c = self._get(instance_id)
        if c is None:
            return
        try:
            c.stop(timeout=int(timeout))
        except docker.errors.NotFound:
            return
        except _DOWN as exc:
            raise TemporaryError(f"dockerd could not stop the container: {exc}") from exc

    def restart(self, instance_id: str, timeout: float = 10) -> Observed:
        self.stop(instance_id, timeout)
        return self.start(instance_id)

    def destroy(self, instance_id: str) -> None:
        c = self._get(instance_id)
        if c is None:
            return
        try:
            c.remove(force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # removal already in progress
                return
            raise TemporaryError(f"dockerd could not remove the container: {exc}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc

    def inspect(self, instance_id: str) -> Observed | None:
        c = self._get(instance_id)
        return _observed(c) if c is not None else None

    def list(self) -> list[Observed]:
        try:
            found = self.client.containers.list(all=True, filters={"label": self._labels})
        except _DOWN as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc
        return [_observed(c) for c in found]

    def events(self, stop: Event) -> Iterator[str]:
        filters = {"type": "container", "label": self._labels, "event": ["start", "die"]}
        try:
            stream = self.client.events(decode=True, filters=filters)
        except _DOWN as exc:
            raise TemporaryError(f"dockerd event stream unavailable: {exc}") from exc
        try:
            for ev in stream:
                if stop.is_set():
                    return
                attrs = ev.get("Actor", {}).get("Attributes", {})
                if LABEL in attrs:
                    yield attrs[LABEL]
        except _DOWN as exc:
            raise TemporaryError(f"dockerd event stream broke: {exc}") from exc
        finally:
            stream.close()
        raise TemporaryError("dockerd closed the event stream")

    def _get(self, instance_id: str) -> Container | None:
        try:
            return self.client.containers.get(container_name(instance_id))
        except docker.errors.NotFound:
            return None
        except _DOWN as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc


def _create_kwargs(spec: ContainerSpec, host: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "image": spec.image_ref,
        "name": spec.container_name,
        "hostname": spec.hostname,
        "labels": {LABEL: spec.instance_id, HOST_LABEL: host, "dockyard.name": spec.name},
        "network_mode": "none",
        "detach": True,
        "mounts": [
            DockerMount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ],
        "mem_limit": f"{spec.memory_mb}m",
        "memswap_limit": f"{spec.memory_mb}m",  # no swap unless a flavor says so (later)
        "pids_limit": spec.pids_limit,
        "restart_policy": {"Name": "no"},  # the agent owns restarts
    }
    if spec.command:
        kwargs["command"] = spec.command
    if spec.cpuset:
        kwargs["cpuset_cpus"] = ",".join(str(c) for c in spec.cpuset)
    else:
        kwargs["cpu_shares"] = 1024 * spec.vcpus
    return kwargs


def _observed(c: Container) -> Observed:
    st = c.attrs.get("State", {})
    return Observed(
        instance_id=c.labels.get(LABEL, ""),
        running=bool(st.get("Running")),
        pid=int(st.get("Pid") or 0),
        started_at=str(st.get("StartedAt", "")),
        exit_code=int(st.get("ExitCode") or 0),
        oom_killed=bool(st.get("OOMKilled")),
    )


def _json(command: list[str]) -> str:
    import json

    return json.dumps(command)
