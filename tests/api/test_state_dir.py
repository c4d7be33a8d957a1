"""dockyard-server keeps its state (token hashes in dockyard.db) to itself: 0700/0600."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from dockyard.api.server import prepare_state_dir
from dockyard.lab.procs import free_port


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _run_server(state: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dockyard.api.server", "--state-dir", str(state)]
        + ["--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
        preexec_fn=lambda: os.umask(0o022),
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("dockyard-server did not start")
        files = {p.name: _mode(p) for p in state.iterdir()}
        assert _mode(state) == 0o700
        assert {"dockyard.db", "dockyard.db-wal", "dockyard.db-shm", "admin.token"} <= set(files)
        assert all(mode & 0o077 == 0 for mode in files.values()), files
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_a_new_state_dir_and_database_are_private(tmp_path):
    _run_server(tmp_path / "new" / "state")


def test_an_existing_world_readable_state_is_tightened(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    for name in ("dockyard.db", "dockyard.db-wal", "dockyard.db-shm"):
        (state / name).touch()
        os.chmod(state / name, 0o644)
    prepare_state_dir(state)
    assert _mode(state) == 0o700
    assert {n: _mode(state / n) for n in ("dockyard.db", "dockyard.db-wal", "dockyard.db-shm")} == {
        "dockyard.db": 0o600,
        "dockyard.db-wal": 0o600,
        "dockyard.db-shm": 0o600,
    }


def test_the_state_dir_of_a_postgresql_server_is_private_too(tmp_path):
    prepare_state_dir(tmp_path / "pg", "postgresql+psycopg://u@h/db")
    assert _mode(tmp_path / "pg") == 0o700 and list((tmp_path / "pg").iterdir()) == []
