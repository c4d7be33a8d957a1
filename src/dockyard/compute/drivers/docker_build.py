"""Image builds through dockerd's classic builder (a low-level ``POST /build``).

Why the classic builder: it runs each step in a container made with the request's
limits (cpuset, memory, memory+swap, CPU shares, cgroup parent, /dev/shm, network),
so a build stays on the host's reserved cores and inside its memory; BuildKit ignores
those per-build limits.

Why a request of our own rather than the SDK's ``build``: the SDK cannot pass
``cgroupparent``, and it sends every login of root's ~/.docker/config.json
(X-Registry-Config) and its proxies as build arguments: a tenant's FROM would pull
with the host's credentials.

What confines a build's steps:

    cpusetcpus   the host's reserved cores        cpushares  2 (the lowest but one)
    memory       the order's, memswap = memory    shmsize    BUILD_SHM_MB
    networkmode  none (spec.network)              X-Registry-Config  {} (no logins)
    cgroupparent spec.cgroup, made here first with pids.max = spec.pids_max and the
                 lowest CPU weight (a fork bomb in a RUN stops there, not at the host's
                 pid_max); cgroupfs driver only (systemd's: refused, see _parent)
    disk         before each build: below BUILD_DISK_PRUNE free on the runtime's data
                 root, dangling images (the builds' untagged steps) are pruned; below
                 BUILD_DISK_FLOOR still, the build is refused. A build's layers are
                 not limited in size while it runs.

Why a socket shutdown: the build is one long HTTP response read on the build's
thread; a stop (the order cancelled, its time up) must end it from another thread
at once. Shutting the response's socket wakes that read, and dockerd cancels a build
whose client went away (the classic builder kills the step's container, and
``forcerm`` removes it). The same ends a push (``stopped_by``).

Only compute/drivers/docker.py imports the docker SDK: this module drives the
driver's low-level client and catches the HTTP errors it raises (its APIError is a
requests HTTPError).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import requests.exceptions
import urllib3.exceptions

from dockyard import cgroups
from dockyard.compute.driver import (
    BUILD_DISK_FLOOR,
    BUILD_DISK_PRUNE,
    BUILD_LINE_MAX,
    BUILD_SHM_MB,
    BuildSpec,
    cores_text,
)
from dockyard.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)
# the stream breaking (a halt shuts its socket: urllib3 raises its own errors there)
BROKEN = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError)
BUILD_SHARES = 2  # cpu.shares of each step's container: the kernel's least is 2
CUT = " [line cut]"
Context = Callable[[Path, str], IO[bytes]]  # (tree, Dockerfile) -> its tar


def build(
    api: Any, spec: BuildSpec, output: Callable[[str], None], halt: threading.Event, tar: Context
) -> str:
    """ComputeDriver.build on dockerd: see its contract."""
    if not spec.cpuset:
        raise PermanentError("a build needs cores to run on (the host's reserved cores)")
    info = _info(api)
    parent = _parent(info, spec)
    _room(api, info, output)
    response = _request(api, _params(spec, parent), tar(spec.context, spec.dockerfile))
    with stopped_by(halt, response):
        image = _follow(api._stream_helper(response, decode=True), output, halt)
    if halt.is_set():
        raise PermanentError("the build was stopped")
    if image is None:
        raise PermanentError("dockerd ended the build without naming an image")
    return image


def _params(spec: BuildSpec, parent: str) -> dict[str, Any]:
    return {
        "t": spec.ref,
        "dockerfile": spec.dockerfile,
        "rm": True,
        "forcerm": True,  # a failed step's container goes too
        "nocache": False,
        "pull": False,
        "cpusetcpus": cores_text(spec.cpuset),
        "cpushares": BUILD_SHARES,
        "memory": spec.memory_mb << 20,
        "memswap": spec.memory_mb << 20,  # memory + swap = memory: no swap
        "shmsize": BUILD_SHM_MB << 20,
        "networkmode": spec.network,
        "cgroupparent": parent,
        "buildargs": "{}",
    }


def _request(api: Any, params: dict[str, Any], context: IO[bytes]) -> Any:
    headers = {
        "Content-Type": "application/tar",
        "X-Registry-Config": "e30=",  # base64 of {}: no login of the host's for a FROM
    }
    try:
        response = api._post(api._url("/build"), data=context, params=params,
                             headers=headers, stream=True, timeout=None)  # fmt: skip
        api._raise_for_status(response)
    except requests.exceptions.ConnectionError as exc:
        raise TemporaryError(f"dockerd is not answering: {exc}") from exc
    except requests.exceptions.HTTPError as exc:
        raise PermanentError(f"dockerd refused the build: {_why(exc)}") from exc
    finally:
        context.close()
    return response


def _info(api: Any) -> dict[str, Any]:
    try:
        return dict(api.info())
    except requests.exceptions.RequestException as exc:
        raise TemporaryError(f"dockerd is not answering: {exc}") from exc


def _parent(info: dict[str, Any], spec: BuildSpec) -> str:
    """The cgroup parent of the build's steps, made with its pids limit."""
    if info.get("CgroupDriver") == "systemd":
        raise PermanentError(
            "this host's dockerd uses the systemd cgroup driver: builds need a cgroup "
            "parent with a task limit, made by the agent (run the build host's dockerd "
            "with --exec-opt native.cgroupdriver=cgroupfs)"
        )
    try:
        cgroups.make_parent(spec.cgroup, spec.pids_max)
    except (OSError, ValueError) as exc:
        raise PermanentError(
            f"could not make the builds' cgroup {spec.cgroup} with pids.max "
            f"{spec.pids_max}: {exc}; builds do not run without it"
        ) from exc
    return "/" + spec.cgroup.strip("/")


def _room(api: Any, info: dict[str, Any], output: Callable[[str], None]) -> None:
    """Enough free disk under dockerd's data root, pruning the builds' leftovers
    first when it runs low."""
    root = str(info.get("DockerRootDir") or "/var/lib/docker")
    if _free(root) < BUILD_DISK_PRUNE:
        try:
            gone = api.prune_images(filters={"dangling": True})
            output(f"disk low: pruned dangling images ({gone.get('SpaceReclaimed', 0)} bytes)")
        except requests.exceptions.RequestException as exc:
            log.warning("could not prune dangling images: %s", exc)
    free = _free(root)
    if free < BUILD_DISK_FLOOR:
        raise PermanentError(
            f"the build host's disk ({root}) has {free:.0%} free, under the "
            f"{BUILD_DISK_FLOOR:.0%} builds need: free space there (docker image prune) "
            "or build on another host"
        )


def _free(root: str) -> float:
    usage = shutil.disk_usage(root)
    return usage.free / usage.total if usage.total else 0.0


def _follow(
    stream: Iterator[Any], output: Callable[[str], None], halt: threading.Event
) -> str | None:
    """Read the build's JSON messages to their end; the image id it made, if any."""
    image: str | None = None
    lines = Lines(output)
    try:
        for msg in stream:
            if not isinstance(msg, dict):
                continue
            if "error" in msg:
                lines.end()
                raise PermanentError(str(msg["error"]).strip()[:BUILD_LINE_MAX])
            text = msg.get("stream")
            if isinstance(text, str):
                lines.feed(text)
            elif "status" in msg and "progress" not in msg:
                output(" ".join(str(msg[k]) for k in ("id", "status") if msg.get(k)))
            aux = msg.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image = str(aux["ID"])
    except BROKEN as exc:
        if halt.is_set():
            return image
        raise TemporaryError(f"dockerd broke off the build: {exc}") from exc
    lines.end()
    return image


class Lines:
    """Text as it comes, handed on in lines of at most BUILD_LINE_MAX characters: a
    longer line is cut there (marked) and the rest of it dropped until its newline,
    so what is held never grows past one line's limit."""

    def __init__(self, output: Callable[[str], None]) -> None:
        self.output = output
        self.partial = ""
        self.dropping = False  # within a line already cut

    def feed(self, text: str) -> None:
        *whole, rest = text.split("\n")
        for piece in whole:
            if not self.dropping:
                self._emit(self.partial + piece)
            self.partial, self.dropping = "", False
        if not self.dropping:
            self.partial += rest
            if len(self.partial) > BUILD_LINE_MAX:
                self._emit(self.partial)
                self.partial, self.dropping = "", True

    def end(self) -> None:
        if self.partial:
            self._emit(self.partial)
        self.partial, self.dropping = "", False

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        self.output(line if len(line) <= BUILD_LINE_MAX else line[:BUILD_LINE_MAX] + CUT)


def response_of(stream: Iterator[Any]) -> Any:
    """The HTTP response under an SDK's stream (``api.push``'s): the generator
    ``_stream_helper(response, decode)``, whose frame holds it before the first read."""
    frame = getattr(stream, "gi_frame", None)
    return None if frame is None else frame.f_locals.get("response")


@contextlib.contextmanager
def stopped_by(halt: threading.Event, response: Any) -> Iterator[None]:
    """While the body is read: ``halt`` shuts the response's socket down."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if halt.wait(0.2):
                _shut(response)
                return

    watcher = threading.Thread(target=watch, daemon=True, name="build-halt")
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        with contextlib.suppress(Exception):
            response.close()


def _shut(response: Any) -> None:
    raw = getattr(response, "raw", None)
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is None:  # the connection not held by the response: its file's socket
        fp = getattr(getattr(raw, "_fp", None), "fp", None)
        sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    else:
        log.warning("could not reach the build's socket: it ends at its next step")


def _why(exc: requests.exceptions.HTTPError) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)[:500]
