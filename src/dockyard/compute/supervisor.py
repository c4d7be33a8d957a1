"""Key processes: each machine container's supervisord, asked over its XML-RPC socket.

    base image (images/base.py)   supervisord -n, programs in /etc/supervisor/conf.d/
                                  Debian's supervisord.conf: [unix_http_server]
                                  file=/var/run/supervisor.sock (/var/run is /run)
    agent (root, host side)       /proc/<PID 1>/root/run/supervisor.sock   no docker exec,
                                  no mount: the container's own socket, reached through
                                  its root, by the host's root only (the socket is 0700)
    supervisor.getAllProcessInfo  name, statename, start (epoch of the last start)
                                  a changed ``start`` is a restart ─► restarts += 1

An image without supervisord (busybox) has no socket: its instance has no key
processes, and connecting costs one failed connect(2).
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from dockyard.compute.metrics import ProcessState

SOCKETS = ("run/supervisor.sock", "tmp/supervisor.sock")  # Debian's, then supervisord's own
TIMEOUT = 2.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.path, self.timeout = path, timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self.path, self.timeout)


def process_info(root: Path, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """supervisord's getAllProcessInfo through the socket under ``root`` (a container's
    root, /proc/PID/root). No supervisord there: OSError."""
    problem: Exception = FileNotFoundError(f"no supervisord socket under {root}")
    for rel in SOCKETS:
        path = str(root / rel)
        proxy = xmlrpc.client.ServerProxy("http://localhost", _UnixTransport(path, timeout))
        try:
            return cast(list[dict[str, Any]], proxy.supervisor.getAllProcessInfo())
        except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
            problem = exc
    raise OSError(f"supervisord under {root}: {problem}") from problem


@dataclass
class _Seen:
    pid: int  # the container's PID 1: a new one is a new supervisord
    starts: dict[str, int] = field(default_factory=dict)  # program -> its last start
    restarts: dict[str, int] = field(default_factory=dict)


class SupervisorWatch:
    """The real ProcessWatch (compute/metrics.py): restarts counted from ``start``."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self._seen: dict[str, _Seen] = {}

    def poll(self, instance_id: str, pid: int) -> dict[str, ProcessState]:
        try:
            infos = process_info(self.proc / str(pid) / "root")
        except OSError:
            return {}
        seen = self._seen.get(instance_id)
        if seen is None or seen.pid != pid:
            seen = self._seen[instance_id] = _Seen(pid)
        return {str(i["name"]): self._state(seen, i) for i in infos}

    @staticmethod
    def _state(seen: _Seen, info: dict[str, Any]) -> ProcessState:
        name, start = str(info["name"]), int(info.get("start") or 0)
        before = seen.starts.get(name)
        if before is not None and start and start != before:
            seen.restarts[name] = seen.restarts.get(name, 0) + 1
        if start:
            seen.starts[name] = start
        return ProcessState(info.get("statename") == "RUNNING", seen.restarts.get(name, 0))

    def forget(self, instance_id: str) -> None:
        self._seen.pop(instance_id, None)


class FakeProcesses:
    """In memory: a test sets each instance's programs."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, ProcessState]] = {}

    def poll(self, instance_id: str, pid: int) -> dict[str, ProcessState]:
        return dict(self.states.get(instance_id, {}))

    def forget(self, instance_id: str) -> None:
        self.states.pop(instance_id, None)
