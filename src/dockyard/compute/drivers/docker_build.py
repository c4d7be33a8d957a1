"""Image builds through dockerd's classic builder (the SDK's low-level ``api.build``).

Why the classic builder: it runs each step in a container made with the request's
``container_limits`` (cpuset, memory, memory+swap), so a build stays on the host's
reserved cores and inside its memory; BuildKit ignores those per-build limits.

Why a socket shutdown: the build is one long HTTP response read on the build's
thread; a stop (the order cancelled, its time up) must end it from another thread
at once. Shutting the response's socket wakes that read, and dockerd cancels a build
whose client went away (the classic builder kills the step's container, and
``forcerm`` removes it).

Only compute/drivers/docker.py imports the docker SDK: this module drives the
driver's low-level client and catches the HTTP errors it raises (its APIError is a
requests HTTPError).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import requests.exceptions
import urllib3.exceptions

from dockyard.compute.driver import BuildSpec, cores_text
from dockyard.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)
# the stream breaking (a halt shuts its socket: urllib3 raises its own errors there)
_BROKEN = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError)


def build(api: Any, spec: BuildSpec, output: Callable[[str], None], halt: threading.Event) -> str:
    """ComputeDriver.build on dockerd: see its contract."""
    if not spec.cpuset:
        raise PermanentError("a build needs cores to run on (the host's reserved cores)")
    limits = {
        "cpusetcpus": cores_text(spec.cpuset),
        "memory": spec.memory_mb << 20,
        "memswap": spec.memory_mb << 20,  # memory + swap = memory: no swap
    }
    try:
        stream = api.build(
            path=str(spec.context),
            dockerfile=spec.dockerfile,
            tag=spec.ref,
            rm=True,
            forcerm=True,  # a failed step's container goes too
            nocache=False,
            pull=False,
            decode=True,
            container_limits=limits,
            timeout=None,  # a quiet step may take long: halt ends it, not a read timeout
        )
    except requests.exceptions.ConnectionError as exc:
        raise TemporaryError(f"dockerd is not answering: {exc}") from exc
    except requests.exceptions.HTTPError as exc:
        raise PermanentError(f"dockerd refused the build: {_why(exc)}") from exc
    with _stopped_by(halt, _response_of(stream)):
        image = _follow(stream, output, halt)
    if halt.is_set():
        raise PermanentError("the build was stopped")
    if image is None:
        raise PermanentError("dockerd ended the build without naming an image")
    return image


def _follow(
    stream: Iterator[Any], output: Callable[[str], None], halt: threading.Event
) -> str | None:
    """Read the build's JSON messages to their end; the image id it made, if any."""
    image: str | None = None
    partial = ""
    try:
        for msg in stream:
            if not isinstance(msg, dict):
                continue
            if "error" in msg:
                if partial:
                    output(partial)
                raise PermanentError(str(msg["error"]).strip())
            text = msg.get("stream")
            if isinstance(text, str):
                *lines, partial = (partial + text).split("\n")
                for line in lines:
                    output(line.rstrip("\r"))
            elif "status" in msg and "progress" not in msg:
                output(" ".join(str(msg[k]) for k in ("id", "status") if msg.get(k)))
            aux = msg.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image = str(aux["ID"])
    except _BROKEN as exc:
        if halt.is_set():
            return image
        raise TemporaryError(f"dockerd broke off the build: {exc}") from exc
    if partial:
        output(partial)
    return image


def _response_of(stream: Iterator[Any]) -> Any:
    """The HTTP response under the SDK's build stream: ``api.build`` returns the
    generator ``_stream_helper(response, decode)``, whose frame holds it before the
    first read."""
    frame = getattr(stream, "gi_frame", None)
    return None if frame is None else frame.f_locals.get("response")


@contextlib.contextmanager
def _stopped_by(halt: threading.Event, response: Any) -> Iterator[None]:
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
