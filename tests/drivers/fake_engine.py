"""dockerd's Engine API as the Docker driver calls it, faked at the SDK boundary
(``docker.DockerClient``): no dockerd, no root."""

from __future__ import annotations

import threading
import time

import docker
import requests.exceptions

CALL_SECONDS = 0.05


class EngineAPI:
    """The SDK's low-level client as the teardown calls use it: each removal or stop
    takes CALL_SECONDS; how many ran at once is kept."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.calls: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        self.answers = True  # info answers; False: it times out as on a wedged dockerd

    def _call(self, what: str) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.calls.append(what)
        self.hold.wait(10)
        time.sleep(CALL_SECONDS)
        with self.lock:
            self.now -= 1

    def remove_container(self, name: str, force: bool = False, v: bool = False) -> None:
        assert force and v
        self._call(f"rm {name}")

    def stop(self, name: str, timeout: int = 10) -> None:
        self._call(f"stop {name}")

    def inspect_container(self, name: str) -> dict[str, object]:
        raise docker.errors.NotFound("no such container")

    def info(self) -> dict[str, object]:
        if not self.answers:
            raise requests.exceptions.ReadTimeout("read timed out (read timeout=120)")
        return {"NCPU": 2, "MemTotal": 2**31, "DockerRootDir": "/", "Driver": "vfs",
                "ServerVersion": "20.10.24+dfsg1"}  # fmt: skip


def driver():
    from dockyard.compute.drivers.docker import DockerDriver

    return DockerDriver("h1", "unix:///nonexistent/docker.sock")
