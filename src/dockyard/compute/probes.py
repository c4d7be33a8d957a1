"""The host's health probes (compute/health.py's Prober): http, tcp and cmd.

http and tcp connect to the instance's IP:PORT from a socket opened in the
instance's own network namespace (a socket stays in the namespace it was made in;
it is then used from the asyncio loop). That works on any host: the agent's namespace
reaches an instance through its bridge only if the host has an address on that
network, which a plain host need not have, and a lab host (a namespace of its own)
neither. What it proves is that the service answers on the instance's address, not
that the datacenter network reaches it (the bridge and the anti-spoofing rules are
the agent's to check).

The namespace: /proc/PID/ns/net of the container's PID 1 is opened once per container
start and the fd kept until the start is no longer checked (``release``). A PID from
the last reconcile pass may belong to another process by now (the container died, the
PID was reused: possibly the host's namespace), so it is opened only as confirmed: a
pidfd taken first, dockerd asked that this PID is the running container's of that
start, the namespace opened, and the pidfd's process still alive after (a pidfd names
one process: a reused PID would show it exited).

The sockets are made by NETNS_THREADS helper threads, never on the loop: each
setns()es into the instance's namespace, makes the socket, and setns()es back. Making
a socket takes microseconds, so two threads serve hundreds of instances; a thread per
namespace would be hundreds of threads, one thread entering once and staying would
serve one namespace only.

cmd runs the command inside through the driver (docker exec), in a pool of
EXEC_THREADS threads; its timeout runs from when the exec starts. An instance has at
most one check in flight; a check that waited its timeout for a thread (the agent
overloaded by others' slow checks) is not run and not counted against the instance.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import select
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from dockyard.compute.driver import ComputeDriver, ExecResult
from dockyard.compute.health import Target
from dockyard.errors import DockyardError

CLONE_NEWNET = 0x40000000
EXEC_THREADS = 4
NETNS_THREADS = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into the network of {what}: {os.strerror(err)}")


class Namespaces:
    """Network namespace fds of the containers checked, one per container start, and
    the helper threads that make sockets in them."""

    def __init__(self, driver: ComputeDriver) -> None:
        self.driver = driver
        self._fds: dict[str, int] = {}  # Target.key -> its namespace's fd
        self._lock = threading.Lock()
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._pool = ThreadPoolExecutor(NETNS_THREADS, thread_name_prefix="netns")

    async def make_socket(self, target: Target) -> socket.socket:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._make, target)

    def release(self, target: Target) -> None:
        with self._lock:
            fd = self._fds.pop(target.key, None)
        if fd is not None:
            os.close(fd)

    def held(self) -> int:
        with self._lock:
            return len(self._fds)

    def _make(self, target: Target) -> socket.socket:
        fd = self._fd(target)  # a dup: a release meanwhile cannot close it under us
        try:
            _setns(fd, f"instance {target.instance_id}")
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                _setns(self._home, "the agent")
        finally:
            os.close(fd)

    def _fd(self, target: Target) -> int:
        with self._lock:
            fd = self._fds.get(target.key)
            if fd is not None:
                return os.dup(fd)
        fd = self._open(target)
        with self._lock:
            kept = self._fds.setdefault(target.key, fd)
            if kept != fd:
                os.close(fd)  # another thread opened it meanwhile
            return os.dup(kept)

    def _open(self, target: Target) -> int:
        """The namespace of the container start ``target`` names, confirmed."""
        gone = OSError(f"the container of {target.instance_id} (PID {target.pid}) is gone")
        try:
            pidfd = os.pidfd_open(target.pid)
        except OSError as exc:
            raise gone from exc
        try:
            obs = self.driver.inspect(target.instance_id)
            if obs is None or not obs.running or (obs.pid, obs.started_at) != (
                target.pid,
                target.started_at,
            ):
                raise gone
            fd = os.open(f"/proc/{target.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            if select.select([pidfd], [], [], 0)[0]:  # readable: the process exited
                os.close(fd)
                raise gone
            return fd
        finally:
            os.close(pidfd)


class HostProber:
    """``in_netns`` False: sockets in the agent's own namespace (tests without root)."""

    def __init__(self, driver: ComputeDriver, in_netns: bool = True) -> None:
        self.driver = driver
        self.netns = Namespaces(driver) if in_netns else None
        self._exec = ThreadPoolExecutor(EXEC_THREADS, thread_name_prefix="health-exec")
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()

    def release(self, target: Target) -> None:
        if self.netns is not None:
            self.netns.release(target)

    async def probe(self, target: Target) -> tuple[bool | None, str]:
        check = target.check
        try:
            if check.kind == "cmd":
                return await self._cmd(target)
            assert check.port is not None
            return await asyncio.wait_for(self._connect(target, check.port), check.timeout_s)
        except TimeoutError:
            return False, f"no answer within {check.timeout_s:g}s"
        except OSError as exc:
            return False, f"{target.ip}:{check.port}: {exc.strerror or exc}"
        except DockyardError as exc:
            return False, exc.detail

    async def _connect(self, target: Target, port: int) -> tuple[bool, str]:
        loop = asyncio.get_running_loop()
        if self.netns is not None:
            sock = await self.netns.make_socket(target)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (target.ip, port))
            if target.check.kind == "tcp":
                return True, ""
            return await _http_status(loop, sock, target.ip, port, target.check.path)

    async def _cmd(self, target: Target) -> tuple[bool | None, str]:
        check, iid = target.check, target.instance_id
        assert check.command is not None
        with self._lock:
            if iid in self._in_flight:
                return None, "its last check still runs"
            self._in_flight.add(iid)
        future: Future[ExecResult | None] = self._exec.submit(
            self._exec_once, target, time.monotonic()
        )
        future.add_done_callback(lambda _: self._done(iid))  # run, failed or cancelled
        result = await asyncio.wrap_future(future)
        if result is None:
            return None, f"the agent had no thread free within {check.timeout_s:g}s"
        if result.exit_code == 0:
            return True, ""
        tail = result.output.strip()[-200:]
        return False, f"{check.command[0]} exited {result.exit_code}" + (
            f": {tail}" if tail else ""
        )

    def _exec_once(self, target: Target, queued: float) -> ExecResult | None:
        check = target.check
        assert check.command is not None
        if time.monotonic() - queued > check.timeout_s:
            return None  # waited its whole timeout for a thread: the agent's fault
        return self.driver.exec(target.instance_id, check.command, check.timeout_s)

    def _done(self, iid: str) -> None:
        with self._lock:
            self._in_flight.discard(iid)


async def _http_status(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, ip: str, port: int, path: str
) -> tuple[bool, str]:
    """GET ``path`` over HTTP/1.0: 2xx and 3xx pass."""
    request = (
        f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: dockyard-health\r\n"
        "Connection: close\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n" not in head and len(head) < 1024:
        chunk = await loop.sock_recv(sock, 1024)
        if not chunk:
            break
        head += chunk
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return False, f"GET {path}: not an HTTP answer ({line[:80]!r})"
    status = int(parts[1])
    if 200 <= status < 400:
        return True, ""
    return False, f"GET {path} answered {line[:120]}"
