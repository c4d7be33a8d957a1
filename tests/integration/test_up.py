"""`dockyard up` on a fresh state dir: the first thing a new user runs."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.integration.cluster import Dockerd, free_port, run, stop_pid, wait_for
from tests.integration.conftest import _can_run

pytestmark = [pytest.mark.root, pytest.mark.slow]
DEMO_BRIDGE = "dyk-demo"


@pytest.fixture
def dockerd():
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    if Path("/sys/class/net", DEMO_BRIDGE).exists():
        pytest.skip(f"{DEMO_BRIDGE} exists: a `dockyard up` is running on this machine")
    tag = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix=f"dyk-up-{tag}-"))
    d = Dockerd(root, tag)
    try:
        d.start()
        yield d
    finally:
        d.stop()
        run("ip", "link", "del", DEMO_BRIDGE, check=False)
        shutil.rmtree(d.exec_root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def test_up_then_create_gives_a_reachable_instance(dockerd):
    state = dockerd.root / "state"
    port = free_port()
    env = {**os.environ, "DOCKER_HOST": dockerd.url}
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dockyard.cli.main",
            "up",
            "--state-dir",
            str(state),
            "--listen",
            f"127.0.0.1:{port}",
            "--host-name",
            "uptest",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        banner = wait_for(lambda: _line(up, "Dockyard is up"), 60, "the banner")
        assert banner
        envfile = state / "admin.env"
        assert stat.S_IMODE(envfile.stat().st_mode) == 0o600
        creds = dict(
            line.removeprefix("export ").split("=", 1) for line in envfile.read_text().splitlines()
        )
        assert creds["DOCKYARD_URL"] == f"http://127.0.0.1:{port}"
        cli_env = {**env, **creds}

        def cli(*args):
            return subprocess.run(
                [sys.executable, "-m", "dockyard.cli.main", *args],
                capture_output=True,
                text=True,
                env=cli_env,
                timeout=120,
            )

        wait_for(lambda: "uptest" in cli("host", "list").stdout, 30, "the host to register")
        r = cli(
            "server",
            "create",
            "web",
            "--image",
            "demo",
            "--flavor",
            "small",
            "--network",
            "demo",
            "--wait",
            "-f",
            "json",
        )
        assert r.returncode == 0, r.stderr
        assert '"status": "ACTIVE"' in r.stdout and '"hostname": "demo0010"' in r.stdout
        assert "ACTIVE in" in r.stderr  # progress went to stderr
        ping = run("ping", "-c", "1", "-W", "1", "198.18.0.10", check=False)
        assert ping.returncode == 0, "the demo instance is reachable from this host"
    finally:
        stop_pid(up, signal.SIGTERM)
    assert up.returncode == 0
    # a second `up` on the same state dir: same credentials, the instance still there
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dockyard.cli.main",
            "up",
            "--state-dir",
            str(state),
            "--listen",
            f"127.0.0.1:{port}",
            "--host-name",
            "uptest",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_for(lambda: _line(up, "Dockyard is up"), 60, "the banner again")
        wait_for(lambda: "ACTIVE" in cli("server", "list").stdout, 30, "web ACTIVE again")
        assert run("ping", "-c", "1", "-W", "1", "198.18.0.10", check=False).returncode == 0
        assert cli("server", "delete", "web", "--wait").returncode == 0
    finally:
        stop_pid(up, signal.SIGTERM)
    assert up.returncode == 0
    assert not list((state / "agent" / "instances").iterdir())


def _line(proc: subprocess.Popen, text: str) -> str | None:
    assert proc.stdout is not None
    if proc.poll() is not None:
        raise AssertionError(f"dockyard up exited: {proc.stdout.read()}")
    line = proc.stdout.readline()
    return line if text in line else None
