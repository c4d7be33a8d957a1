"""`dockyard up` on a fresh state dir: the first thing a new user runs."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import free_ports, private_dockerd, run, stop_pid, wait_for
from tests.integration.conftest import _can_run

pytestmark = [pytest.mark.root, pytest.mark.slow]
# its own bridge and subnet, so a demo cloud running on this machine is left alone
TAG = os.urandom(2).hex()
DEMO_BRIDGE = f"dyu-{TAG}"
DEMO_NET = f"198.19.{int(TAG[:2], 16)}"
DEMO_IP = f"{DEMO_NET}.10"


@pytest.fixture
def dockerd():
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    try:
        with private_dockerd("up") as d:
            yield d
    finally:
        run("ip", "link", "del", DEMO_BRIDGE, check=False)


class Up:
    """A `dockyard up` in the foreground, as a user runs it, and its CLI."""

    def __init__(
        self, state: Path, docker_host: str, address: str = "127.0.0.1", *extra: str
    ) -> None:
        # the API's port, the registry's (+1) and the default monitoring ports (+2, +3)
        self.state, self.address, self.extra = state, address, extra
        self.port = free_ports(4, address)
        self.env = {**os.environ, "DOCKER_HOST": docker_host}
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dockyard.cli.main",
                "up",
                "--state-dir",
                str(self.state),
                "--listen",
                f"{self.address}:{self.port}",
                "--host-name",
                "uptest",
                "--demo-bridge",
                DEMO_BRIDGE,
                "--demo-cidr",
                f"{DEMO_NET}.0/24",
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        wait_for(lambda: self._line("Dockyard is up"), 60, "the banner")

    def stop(self) -> int:
        assert self.proc is not None
        stop_pid(self.proc, signal.SIGTERM)
        # the agent trusted the registry (TLS from this cloud's CA) for dockerd there
        shutil.rmtree(Path("/etc/docker/certs.d") / f"{self.address}:{self.port + 1}", True)
        return self.proc.returncode

    def _line(self, text: str) -> bool:
        assert self.proc is not None and self.proc.stdout is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"dockyard up exited: {self.proc.stdout.read()}")
        return text in self.proc.stdout.readline()

    def credentials(self) -> dict[str, str]:
        lines = (self.state / "admin.env").read_text().splitlines()
        return dict(line.removeprefix("export ").split("=", 1) for line in lines)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dockyard.cli.main", *args],
            capture_output=True,
            text=True,
            env={**self.env, **self.credentials()},
            timeout=120,
        )


def test_up_then_create_gives_a_reachable_instance(dockerd):
    up = Up(dockerd.root / "state", dockerd.url)
    up.start()
    try:
        assert stat.S_IMODE((up.state / "admin.env").stat().st_mode) == 0o600
        assert up.credentials()["DOCKYARD_URL"] == f"http://127.0.0.1:{up.port}"
        wait_for(lambda: "uptest" in up.cli("host", "list").stdout, 30, "the host to register")
        r = up.cli(
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
        hostname = f"demo{int(TAG[:2], 16)}010"  # the rule demo{o3}{o4:03d}
        assert '"status": "ACTIVE"' in r.stdout and f'"hostname": "{hostname}"' in r.stdout
        assert "ACTIVE in" in r.stderr  # progress went to stderr
        assert run("ping", "-c", "1", "-W", "1", DEMO_IP, check=False).returncode == 0
    finally:
        assert up.stop() == 0
    # a second `up` on the same state dir: same credentials, the instance still there
    up.start()
    try:
        wait_for(lambda: "ACTIVE" in up.cli("server", "list").stdout, 30, "web ACTIVE again")
        assert run("ping", "-c", "1", "-W", "1", DEMO_IP, check=False).returncode == 0
        assert up.cli("server", "delete", "web", "--wait").returncode == 0
    finally:
        assert up.stop() == 0
    assert not list((up.state / "agent" / "instances").iterdir())


@pytest.fixture
def switch_address():
    """An address beyond loopback for the server (on a bridge of our own, no ports)."""
    link, address = f"dyt-j{TAG}", f"{DEMO_NET}.1"
    run("ip", "link", "add", link, "type", "bridge")
    try:
        run("ip", "addr", "add", f"{address}/32", "dev", link)
        run("ip", "link", "set", link, "up")
        yield address
    finally:
        run("ip", "link", "del", link, check=False)


def test_up_beyond_loopback_serves_https_that_the_cli_verifies_and_a_host_joins(
    dockerd, switch_address
):
    from dockyard import pki
    from dockyard.compute import join

    up = Up(dockerd.root / "state", dockerd.url, address=switch_address)
    up.start()
    try:
        creds = up.credentials()
        assert creds["DOCKYARD_URL"] == f"https://{switch_address}:{up.port}"
        assert creds["DOCKYARD_CA"] == str(up.state / "tls" / "ca.pem")
        for key in ("ca.key", "server.key"):
            assert stat.S_IMODE((up.state / "tls" / key).stat().st_mode) == 0o600
        # this host's own agent reached its server over https, verified
        wait_for(lambda: "uptest" in up.cli("host", "list").stdout, 30, "the host to register")
        r = up.cli("host", "add", "h2", "--az", "az2")
        assert r.returncode == 0, r.stderr
        words = next(line for line in r.stdout.splitlines() if "scripts/setup" in line).split()
        flags = dict(zip(words[1::2], words[2::2], strict=False))
        assert flags["--ca-hash"] == pki.ca_hash((up.state / "tls" / "ca.pem").read_bytes())
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dockyard.compute.cli",
                "--join",
                flags["--join"],
                "--token",
                flags["--token"],
                "--ca-hash",
                flags["--ca-hash"],
                "--state-dir",
                str(up.state / "h2"),
                "--docker-host",
                dockerd.url,
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(up.state / "h2.log").open("wb"),
        )
        try:
            wait_for(lambda: "az2" in up.cli("host", "list").stdout, 30, "h2 to join and register")
            assert join.saved(up.state / "h2").host == "h2"
        finally:
            stop_pid(agent, signal.SIGTERM)
        r = subprocess.run(
            [sys.executable, "-m", "dockyard.cli.main", "host", "list"],
            capture_output=True,
            text=True,
            env={**up.env, **up.credentials(), "DOCKYARD_CA": str(dockerd.root / "none.pem")},
            timeout=60,
        )
        assert r.returncode == 1 and "DOCKYARD_CA" in r.stderr and "no such file" in r.stderr
    finally:
        assert up.stop() == 0
