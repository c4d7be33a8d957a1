"""Real HTTP servers (uvicorn in a thread) on one database, for concurrency tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from dockyard.api.app import create_app
from dockyard.db.session import Database
from dockyard.lab.procs import free_port


@contextmanager
def serving(db: Database, state_dir: Path) -> Iterator[str]:
    """One dockyard-server on ``db``; yields its /v1 URL."""
    with serving_app(create_app(db, state_dir)) as url:
        yield url


@contextmanager
def serving_app(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread; yields its /v1 URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        while not srv.started:
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        srv.should_exit = True
        thread.join(10)
