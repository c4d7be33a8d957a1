"""A real ``dockyard-server`` in a subprocess, for tests that need its whole stack."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, admin: str) -> None:
        self.proc, self.url, self.admin = proc, url, admin

    def rss_kb(self) -> int:
        """Resident memory of the server now (VmRSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def peak_rss_kb(self) -> int:
        """The most resident memory the server has had (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def terminate(self, timeout: float) -> bool:
        """SIGTERM; True when the server exited within ``timeout`` seconds."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False


@contextmanager
def server(
    state_dir: Path, db_url: str, *args: str, ca: Path | None = None
) -> Iterator[ServerProcess]:
    """``ca``: the server serves https (pass --tls-cert/--tls-key in ``args``) and is
    waited for with its certificate verified against this CA."""
    port = free_port()
    log = (state_dir / "server.log").open("wb")
    cmd = [sys.executable, "-m", "dockyard.api.server", "--state-dir", str(state_dir)]
    cmd += ["--db", db_url, "--listen", f"127.0.0.1:{port}", "--log-level", "warning", *args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        url = f"{'https' if ca else 'http'}://127.0.0.1:{port}"
        _wait_up(proc, url, state_dir, ca)
        admin = (state_dir / "admin.token").read_text().strip()
        yield ServerProcess(proc, url, admin)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def _wait_up(
    proc: subprocess.Popen[bytes], url: str, state_dir: Path, ca: Path | None = None
) -> None:
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError((state_dir / "server.log").read_text())
        try:
            if httpx.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not come up in 30 s")
