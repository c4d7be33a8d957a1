"""No request stalls the API: uploads, heartbeats and creates at once, on a real server."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from dockyard.db.session import Database
from tests.api.server_process import server

pytestmark = pytest.mark.slow

AGENTS, UPLOADS, CREATES, UPLOAD_MB = 10, 5, 50, 20


def _setup(c: httpx.Client) -> list[str]:
    c.post(
        "/networks",
        json={"name": "net", "bridge": "dyt-ns0", "subnet": {"cidr": "198.18.0.0/24"}},
    ).raise_for_status()
    c.post("/flavors", json={"name": "tiny", "vcpus": 1, "memory_mb": 16}).raise_for_status()
    c.post("/images", json={"name": "img", "source": "docker", "ref": "x:1"}).raise_for_status()
    for i in range(UPLOADS):
        c.post("/images", json={"name": f"fs{i}", "source": "rootfs"}).raise_for_status()
    tokens = []
    for i in range(AGENTS):
        token = c.post("/agent-tokens", json={"host": f"h{i}"}).json()["token"]
        body = {"name": f"h{i}", "cores": 32, "memory_mb": 65536, "disk_gb": 10}
        c.post(
            "/agent/hosts", json=body, headers={"authorization": f"Bearer {token}"}
        ).raise_for_status()
        tokens.append(token)
    return tokens


def _heartbeats(url: str, host: str, token: str, stop: threading.Event, out: list) -> None:
    h = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=h, timeout=30) as c:
        while not stop.is_set():
            started = time.monotonic()
            try:
                out.append((c.post(f"/v1/agent/hosts/{host}/heartbeat").status_code, started))
            except httpx.HTTPError as exc:
                out.append((repr(exc), started))
            stop.wait(1.0)


def _upload(url: str, admin: str, i: int) -> tuple[int | str, str]:
    payload = bytes([i]) * (UPLOAD_MB << 20)

    def chunks():
        for off in range(0, len(payload), 1 << 20):
            yield payload[off : off + (1 << 20)]

    h = {"authorization": f"Bearer {admin}", "content-type": "application/x-tar"}
    try:
        r = httpx.put(f"{url}/v1/images/fs{i}/file", content=chunks(), headers=h, timeout=60)
        return r.status_code, r.json().get("sha256", "") if r.status_code == 200 else r.text
    except httpx.HTTPError as exc:
        return repr(exc), ""


def _create(url: str, admin: str, i: int) -> int | str:
    body = {"name": f"vm{i}", "image": "img", "flavor": "tiny", "network": "net"}
    h = {"authorization": f"Bearer {admin}"}
    try:
        return httpx.post(f"{url}/v1/instances", json=body, headers=h, timeout=60).status_code
    except httpx.HTTPError as exc:
        return repr(exc)


def test_uploads_heartbeats_and_creates_all_answer_and_sigterm_stops(
    backend_db: Database, tmp_path: Path
):
    with server(tmp_path, backend_db.url) as srv:
        h = {"authorization": f"Bearer {srv.admin}"}
        with httpx.Client(base_url=srv.url + "/v1", headers=h, timeout=30) as c:
            tokens = _setup(c)
        stop, beats = threading.Event(), []  # type: ignore[var-annotated]
        agents = [
            threading.Thread(target=_heartbeats, args=(srv.url, f"h{i}", t, stop, beats))
            for i, t in enumerate(tokens)
        ]
        for t in agents:
            t.start()
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(UPLOADS + CREATES) as pool:
                uploads = [pool.submit(_upload, srv.url, srv.admin, i) for i in range(UPLOADS)]
                creates = [pool.submit(_create, srv.url, srv.admin, i) for i in range(CREATES)]
                up, cr = [f.result() for f in uploads], [f.result() for f in creates]
        finally:
            elapsed = time.monotonic() - started
            stop.set()
            for t in agents:
                t.join(40)
        assert [code for code, _ in up] == [200] * UPLOADS, up
        for i, (_, sha) in enumerate(up):
            assert sha == hashlib.sha256(bytes([i]) * (UPLOAD_MB << 20)).hexdigest()
        assert cr == [202] * CREATES, cr
        assert beats and all(code == 200 for code, _ in beats), beats[:5]
        assert elapsed < 60, f"the load took {elapsed:.1f} s"
        print(f"load answered in {elapsed:.1f} s, {len(beats)} heartbeats")
        assert srv.terminate(15), "the server did not stop on SIGTERM within 15 s"


def test_two_concurrent_uploads_to_one_image_do_not_mix(tmp_path: Path):
    """Each upload has its own temporary file; the last to finish wins, whole."""
    with server(tmp_path, f"sqlite:///{tmp_path}/d.db") as srv:
        h = {"authorization": f"Bearer {srv.admin}"}
        httpx.post(
            f"{srv.url}/v1/images", json={"name": "fs", "source": "rootfs"}, headers=h
        ).raise_for_status()

        def upload(byte: int) -> int:
            def chunks():
                for _ in range(16):
                    yield bytes([byte]) * (1 << 20)
                    time.sleep(0.02)  # interleave with the other upload

            url = f"{srv.url}/v1/images/fs/file"
            return httpx.put(url, content=chunks(), headers=h, timeout=60).status_code

        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(upload, [1, 2]))
        assert codes == [200, 200]
        shown = httpx.get(f"{srv.url}/v1/images/fs", headers=h).json()
        body = httpx.get(f"{srv.url}/v1/images/fs/file", headers=h, timeout=60).content
        assert hashlib.sha256(body).hexdigest() == shown["sha256"]
        assert body in (bytes([1]) * (16 << 20), bytes([2]) * (16 << 20))
        assert shown["size"] == 16 << 20
        assert not list((tmp_path / "images").glob("*.part"))


def test_more_concurrent_writes_than_server_threads_all_answer(backend_db: Database, tmp_path):
    """80 volume creates and 80 project creates at once (the server has 40 worker
    threads): each is answered, and the server still answers afterwards. A session
    that held SQLite's write lock while waiting for a free thread hung it for good."""
    from dockyard.api.server import init
    from tests.api.servers import serving

    admin = init(backend_db)
    with serving(backend_db, tmp_path) as url:
        auth = {"authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=url, headers=auth, timeout=60) as c:
            c.post("/projects", json={"name": "p"}).raise_for_status()
            member = c.post("/users", json={"name": "m", "project": "p"}).json()["token"]

        def create(i: int) -> int:
            who = {"authorization": f"Bearer {member if i % 2 else admin}"}
            with httpx.Client(base_url=url, headers=who, timeout=60) as c:
                if i % 2:
                    return c.post("/volumes", json={"name": f"v{i}", "size_mb": 16}).status_code
                return c.post("/projects", json={"name": f"p{i}"}).status_code

        with ThreadPoolExecutor(160) as pool:
            codes = list(pool.map(create, range(160)))
        assert codes == [201] * 160
        with httpx.Client(base_url=url, headers=auth, timeout=10) as c:
            assert len(c.get("/volumes").json()) == 80
            assert len(c.get("/projects").json()) == 82  # admin, p and the 80
