"""Real delivery endpoints for the alert tests: Debian's Alertmanager on a free port with
its data in a temp dir (stopped by PID), a recording HTTP target that answers like
the IM robots, and an aiosmtpd SMTP server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.lab.procs import free_port

__all__ = ["free_port"]


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Target:
    """Records every request; ``/fail...`` paths answer 500, others ``{"errcode": 0}``."""

    url: str
    hits: list[Hit] = field(default_factory=list)

    def at(self, prefix: str) -> list[Hit]:
        return [h for h in list(self.hits) if h.path.startswith(prefix)]


@contextmanager
def http_target() -> Iterator[Target]:
    target = Target("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            target.hits.append(Hit(self.command, self.path, dict(self.headers), body))
            status = 500 if self.path.startswith("/fail") else 200
            data = b'{"errcode": 0, "errmsg": "ok"}'
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    target.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield target
    finally:
        srv.shutdown()
        srv.server_close()


@dataclass
class Mailbox:
    port: int
    messages: list[Any] = field(default_factory=list)


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox(free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            from email import message_from_bytes

            box.messages.append(message_from_bytes(envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@dataclass
class Alertmanager:
    url: str
    config: Path
    process: subprocess.Popen[bytes]

    def post(self, *alerts: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/api/v2/alerts", json=list(alerts)).raise_for_status()

    def reload(self, config: dict[str, Any]) -> None:
        self.config.write_text(json.dumps(config))
        httpx.post(f"{self.url}/-/reload").raise_for_status()


def alertmanager_config(rendered: dict[str, Any]) -> dict[str, Any]:
    """What the monitoring helper's renderer adds around render(): fast timings for tests."""
    route = {
        **rendered["route"],
        "group_by": ["alertname"],
        "group_wait": "1s",
        "group_interval": "2s",
        "repeat_interval": "1h",
    }
    return {"route": route, "receivers": rendered["receivers"]}


@contextmanager
def alertmanager(tmp: Path, port: int, config: dict[str, Any]) -> Iterator[Alertmanager]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("prometheus-alertmanager is not installed (scripts/packages.sh)")
    path = tmp / "alertmanager.yml"
    path.write_text(json.dumps(config))
    (tmp / "am-data").mkdir(exist_ok=True)
    log = (tmp / "alertmanager.log").open("wb")
    argv = [
        binary,
        f"--config.file={path}",
        f"--storage.path={tmp / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip: one instance, no port 9094
    ]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url, proc), 30, "Alertmanager to be ready")
        yield Alertmanager(url, path, proc)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"alertmanager exited with {proc.returncode}")
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
