"""The host's health probes (compute/health.py's Prober): http, tcp and cmd.

http and tcp connect to the instance's IP:PORT from a socket opened in the
instance's own network namespace (setns in a short-lived thread, then the socket
is used from the asyncio loop: a socket stays in the namespace it was made in).
That works on any host: the agent's namespace reaches an instance through its
bridge only if the host has an address on that network, which a plain host need
not have, and a lab host (a namespace of its own) neither. What it proves is that
the service answers on the instance's address, not that the datacenter network
reaches it (the bridge and the anti-spoofing rules are the agent's to check).

cmd runs the command inside through the driver (docker exec), in a pool of
EXEC_THREADS threads: a command runs at most its timeout.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from dockyard.compute.driver import ComputeDriver
from dockyard.compute.health import Target
from dockyard.errors import DockyardError

CLONE_NEWNET = 0x40000000
EXEC_THREADS = 4
_libc = ctypes.CDLL(None, use_errno=True)


def socket_in_netns(pid: int) -> socket.socket:
    """A TCP socket in the network namespace of process ``pid`` (0: this one's)."""
    if pid <= 0:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    made: list[socket.socket | BaseException] = []

    def enter_and_make() -> None:  # the thread ends in the instance's namespace: gone
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(
                        err, f"setns into the network of process {pid}: {os.strerror(err)}"
                    )
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=enter_and_make, name="netns")
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


class HostProber:
    """``in_netns`` False: sockets in the agent's own namespace (tests without root)."""

    def __init__(self, driver: ComputeDriver, in_netns: bool = True) -> None:
        self.driver = driver
        self.in_netns = in_netns
        self._exec = ThreadPoolExecutor(EXEC_THREADS, thread_name_prefix="health-exec")

    async def probe(self, target: Target) -> tuple[bool, str]:
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
        sock = socket_in_netns(target.pid if self.in_netns else 0)
        with sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (target.ip, port))
            if target.check.kind == "tcp":
                return True, ""
            return await _http_status(loop, sock, target.ip, port, target.check.path)

    async def _cmd(self, target: Target) -> tuple[bool, str]:
        loop = asyncio.get_running_loop()
        check = target.check
        assert check.command is not None
        result = await loop.run_in_executor(
            self._exec, self.driver.exec, target.instance_id, check.command, check.timeout_s
        )
        if result.exit_code == 0:
            return True, ""
        tail = result.output.strip()[-200:]
        return False, f"{check.command[0]} exited {result.exit_code}" + (
            f": {tail}" if tail else ""
        )


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
