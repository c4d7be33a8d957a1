"""Body size limits apply before authentication, and cost the server no memory."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.server_process import server

BIG = 200 << 20


def _send(url: str, path: str, total: int, chunked: bool) -> tuple[int, dict, int, float]:
    """POST ``total`` bytes without a token; stop sending once the server has answered.

    Returns the status, the JSON body, the bytes sent and the seconds to the answer.
    """
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        framing = "transfer-encoding: chunked" if chunked else f"content-length: {total}"
        head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        sock.sendall(f"{head}{framing}\r\n\r\n".encode())
        block, sent = b"[" * (1 << 20), 0
        while sent < total and not select.select([sock], [], [], 0)[0]:
            data = block if not chunked else b"%x\r\n%s\r\n" % (len(block), block)
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(block)
        if chunked and sent >= total:
            sock.sendall(b"0\r\n\r\n")
        answer = _read_response(sock)
    status = int(answer.split(b" ", 2)[1])
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1] or b"{}")
    return status, body, sent, time.monotonic() - started


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_200_mb_body_without_token_is_413_at_once_and_costs_no_memory(tmp_path: Path, chunked):
    with server(tmp_path, f"sqlite:///{tmp_path}/d.db", "--max-body-mb", "1") as srv:
        before = srv.rss_kb()
        status, body, sent, seconds = _send(srv.url, "/v1/instances", BIG, chunked)
        grown = srv.peak_rss_kb() - before
        print(
            f"413 after {sent >> 20} MB sent, {seconds:.2f} s; "
            f"server RSS {before} kB, peak +{grown} kB"
        )
        assert status == 413, body
        assert body["status"] == 413 and "--max-body-mb" in body["detail"]
        assert seconds < 5
        assert grown < 20_000, f"the server grew by {grown} kB for a refused body"
        # the server still serves
        assert httpx.get(f"{srv.url}/healthz").status_code == 200


def test_an_upload_above_its_own_limit_is_413_and_leaves_no_file(cloud):
    cloud.client.app.state.max_upload_bytes = 1000  # the handler's running count
    cloud.ok("POST", "/images", json={"name": "fs", "source": "rootfs"})

    def chunks():
        for _ in range(10):
            yield b"x" * 500

    r = cloud.call("PUT", "/images/fs/file", content=chunks())
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "--max-upload-gb" in r.json()["detail"]
    assert list(Path(cloud.client.app.state.image_dir).iterdir()) == []
    assert cloud.ok("GET", "/images/fs")["status"] == "queued"


def test_a_declared_length_above_the_json_limit_is_413_before_auth(cloud):
    r = cloud.client.post("/v1/flavors", content=b"{}", headers={"content-length": str(10 << 30)})
    assert r.status_code == 413, r.text


def test_connections_beyond_the_limit_get_503_while_slow_senders_hold_theirs(tmp_path):
    """Slow unauthenticated senders cannot hold the server's memory without bound: past
    --max-connections, new requests are refused at once."""
    with server(tmp_path, f"sqlite:///{tmp_path}/d.db", "--max-connections", "3") as srv:
        release = threading.Event()

        def slow_body():
            yield b"{"
            release.wait(20)
            yield b"}"

        def hold() -> int:
            with httpx.Client(timeout=30) as c:
                return c.post(f"{srv.url}/v1/projects", content=slow_body()).status_code

        with ThreadPoolExecutor(2) as pool:
            # uvicorn counts the new connection itself: 2 held + 1 new reach the limit of 3
            held = [pool.submit(hold) for _ in range(2)]
            time.sleep(1)  # the two are in, each waiting for the rest of its body
            refused = httpx.get(f"{srv.url}/healthz", timeout=5)
            release.set()
            codes = [f.result() for f in held]
        assert refused.status_code == 503
        assert codes == [401] * 2  # their turn came; no token
        assert httpx.get(f"{srv.url}/healthz", timeout=5).status_code == 200
