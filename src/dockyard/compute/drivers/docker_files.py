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
import socket
import tarfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import requests.exceptions

from dockyard.compute.driver import ExecResult, FileSpec, container_name
from dockyard.compute.recovery import Refused
from dockyard.errors import PermanentError, TemporaryError

TAIL = 4096  # bytes of a command's output kept

if TYPE_CHECKING:
    from dockyard.compute.drivers.docker import DockerDriver


class DockerFiles:
    """compute/recovery.py's FilesInto on a Docker host."""

    def __init__(self, driver: DockerDriver) -> None:
        self.api = driver.api

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
        if r.status_code not in (200, 404):
            raise Refused(f"dockerd could not look at {path}: HTTP {r.status_code}")
        return r.status_code == 200


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
    """``docker exec`` with a deadline: the output is read from the attached socket
    until it closes, then the exit code asked for."""
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
        out = _read_until_closed(raw, deadline, command[0], timeout)
    finally:
        sock.close()
    while True:
        state = api.exec_inspect(exec_id)
        if not state.get("Running") or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # the stream closes a moment before dockerd notes the exit
    if state.get("Running"):
        raise TemporaryError(f"{command[0]} did not end within {timeout:g}s")
    return ExecResult(int(state.get("ExitCode") or 0), _demux(out))


def _read_until_closed(raw: socket.socket, deadline: float, what: str, timeout: float) -> bytes:
    out = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TemporaryError(f"{what} did not end within {timeout:g}s")
        raw.settimeout(left)
        try:
            chunk = raw.recv(65536)
        except TimeoutError as exc:
            raise TemporaryError(f"{what} did not end within {timeout:g}s") from exc
        if not chunk:
            return bytes(out)
        out += chunk


def _demux(data: bytes) -> str:
    """The text of dockerd's multiplexed stream (8-byte frame headers), its last bytes."""
    text = bytearray()
    while len(data) >= 8 and data[0] in (0, 1, 2) and data[1:4] == b"\0\0\0":
        size = int.from_bytes(data[4:8], "big")
        text += data[8 : 8 + size]
        data = data[8 + size :]
    text += data
    return bytes(text[-TAIL:]).decode("utf-8", "replace")
