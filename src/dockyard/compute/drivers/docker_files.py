"""Files into an instance's container through dockerd's archive endpoint (what
`docker cp` uses): recovered files delivered into an instance, and the config files
of its DesiredInstance.files before it starts; and commands run inside it (exec), for
its health check.

Why this way: the archive endpoint works on running and stopped containers alike,
sees the instance's volumes where it sees them, and resolves every path inside the
container's root (a symbolic link the instance made cannot lead the write onto the
host). Writing into an overlay upper directory behind a running container's back is
undefined; entering its mount namespace needs a tar binary inside it.

Only compute/drivers/docker.py imports the docker SDK: this module drives the
driver's low-level client and catches the HTTP errors it raises (its APIError is a
requests HTTPError).
"""

from __future__ import annotations

import io
import os
import signal
import socket
import tarfile
import time
from collections.abc import Sequence
from typing import Any

import requests.exceptions

from dockyard.compute.driver import ExecResult, FileSpec, container_name
from dockyard.compute.recovery import Refused
from dockyard.errors import PermanentError, TemporaryError

TAIL = 4096  # bytes of a command's output kept


class DockerFiles:
    """compute/recovery.py's FilesInto on a Docker host."""

    def __init__(self, api: Any) -> None:
        """``api``: the Docker driver's low-level client (``DockerDriver.api``)."""
        self.api = api

    def put(self, instance_id: str, tar: bytes, top: str) -> None:
        name = container_name(instance_id)
        try:
            self.api.inspect_container(name)
        except requests.exceptions.ConnectionError as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc
        except requests.exceptions.HTTPError as exc:
            raise Refused(f"the instance has no container on this host: {_why(exc)}") from exc
        if self._exists(name, top):
            raise Refused(
                f"{top} already exists in the instance: recover into a directory where "
                "it is not (nothing was overwritten)"
            )
        try:
            self.api.put_archive(name, "/", tar)
        except requests.exceptions.ConnectionError as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc
        except requests.exceptions.HTTPError as exc:
            raise Refused(f"dockerd refused to write the files: {_why(exc)}") from exc

    def _exists(self, name: str, path: str) -> bool:
        """HEAD of the archive endpoint (the container is there): 200 the path is, 404
        it is not."""
        url = f"{self.api.base_url}/v{self.api.api_version}/containers/{name}/archive"
        try:
            r = self.api.head(url, params={"path": path})
        except requests.exceptions.ConnectionError as exc:
            raise TemporaryError(f"dockerd is not answering: {exc}") from exc
        status: int = r.status_code
        if status not in (200, 404):
            raise Refused(f"dockerd could not look at {path}: HTTP {status}")
        return status == 200


def _why(exc: requests.exceptions.HTTPError) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)[:500]


def config_tar(files: Sequence[FileSpec]) -> bytes:
    """A tar of regular files only, named relative to /: no directory entries, so a
    directory (or a link to one) the image has is left as it is, and dockerd makes the
    missing ones (0755)."""
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in files:
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.size, info.mode, info.mtime = len(f.content), f.mode, now
            info.uid = info.gid = 0
            tar.addfile(info, io.BytesIO(f.content))
    return buf.getvalue()


def put_config(api: Any, name: str, files: Sequence[FileSpec]) -> None:
    """dockerd unpacks the tar chrooted into the container's root filesystem, with
    noOverwriteDirNonDir: without it a file whose path is a directory in the container
    (/bin, a volume's mount point) makes dockerd remove that directory with all under it,
    through a mount the host's data. The SDK's put_archive does not pass the flag."""
    if not files:
        return
    params = {"path": "/", "noOverwriteDirNonDir": "true"}
    try:
        res = api._put(api._url("/containers/{0}/archive", name), params=params,
                       data=config_tar(files))  # fmt: skip
        api._raise_for_status(res)
    except requests.exceptions.ConnectionError as exc:
        raise TemporaryError(f"dockerd is not answering: {exc}") from exc
    except requests.exceptions.HTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", 0) or 0
        if status in (409, 503):  # the container busy (being removed), dockerd starting
            raise TemporaryError(f"dockerd could not write the config files: {_why(exc)}") from exc
        # a path that is a directory there, a read-only filesystem, "Error processing tar
        # file": the same files fail the same way again
        raise PermanentError(f"dockerd refused the config files: {_why(exc)}") from exc


def run(api: Any, name: str, command: Sequence[str], timeout: float) -> ExecResult:
    """``docker exec`` with a deadline from when it starts: the output is read from the
    attached socket until it closes (its last TAIL bytes kept, however much it writes),
    then the exit code asked for. A command past its deadline is killed."""
    deadline = time.monotonic() + timeout
    try:
        exec_id = api.exec_create(name, list(command), stdout=True, stderr=True)["Id"]
        sock = api.exec_start(exec_id, socket=True)
    except requests.exceptions.ConnectionError as exc:
        raise TemporaryError(f"dockerd is not answering: {exc}") from exc
    except requests.exceptions.HTTPError as exc:
        raise PermanentError(f"cannot run {command[0]} in the instance: {_why(exc)}") from exc
    raw: socket.socket = getattr(sock, "_sock", sock)
    try:
        out = _read_until_closed(raw, deadline)
    finally:
        sock.close()
        raw.close()  # closing the SocketIO wrapper leaves the socket to the GC
    state: dict[str, Any] = {"Running": out is None}
    while out is not None:
        state = api.exec_inspect(exec_id)
        if not state.get("Running") or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # the stream closes a moment before dockerd notes the exit
    if state.get("Running"):
        _kill(api, exec_id, name)
        raise TemporaryError(f"{command[0]} did not end within {timeout:g}s (killed)")
    assert out is not None
    return ExecResult(int(state.get("ExitCode") or 0), out.text())


def _read_until_closed(raw: socket.socket, deadline: float) -> _Tail | None:
    """The output until the stream closes; None at the deadline."""
    out = _Tail()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        raw.settimeout(left)
        try:
            chunk = raw.recv(65536)
        except TimeoutError:
            return None
        if not chunk:
            return out
        out.feed(chunk)


def _kill(api: Any, exec_id: str, name: str) -> None:
    """SIGKILL to a timed-out exec's process (its PID on the host, from dockerd), but
    only a process in the container's own PID namespace and not its PID 1: a pidfd holds
    the process while that is checked, so a PID reused meanwhile is never signalled."""
    try:
        pid = int(api.exec_inspect(exec_id).get("Pid") or 0)
        init = int(api.inspect_container(name)["State"]["Pid"] or 0)
    except (requests.exceptions.RequestException, KeyError, TypeError, ValueError):
        return
    if pid <= 0 or init <= 0 or pid == init:
        return
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return  # ended meanwhile, or not visible from this agent's PID namespace
    try:
        ns = os.stat(f"/proc/{pid}/ns/pid").st_ino
        if ns == os.stat(f"/proc/{init}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass  # ended meanwhile
    finally:
        os.close(fd)


class _Tail:
    """dockerd's multiplexed stream (8-byte frame headers) taken as it comes: the last
    TAIL bytes of what the command wrote are kept, nothing more."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.head = bytearray()  # a frame header not complete yet
        self.left = 0  # bytes of the current frame still to come
        self.raw = False  # not a multiplexed stream (a TTY's): kept as it is

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self.raw or self.left:
                n = len(view) if self.raw else min(self.left, len(view))
                self._keep(view[:n])
                view, self.left = view[n:], 0 if self.raw else self.left - n
                continue
            need = 8 - len(self.head)
            self.head += view[:need]
            view = view[need:]
            if len(self.head) < 8:
                return
            head = bytes(self.head)
            self.head.clear()
            if head[0] in (0, 1, 2) and head[1:4] == b"\0\0\0":
                self.left = int.from_bytes(head[4:8], "big")
            else:
                self.raw = True
                self._keep(head)

    def _keep(self, data: bytes | memoryview) -> None:
        self.kept += data
        if len(self.kept) > TAIL:
            del self.kept[:-TAIL]

    def text(self) -> str:
        return bytes((self.kept + self.head)[-TAIL:]).decode("utf-8", "replace")
