"""How long the ``dockyard`` CLI takes, start to exit, against a running server.

Starts a ``dockyard-server`` on a temporary state dir (SQLite, no agent: a
host is registered through the API, so one instance record exists for
``server show``), then runs each command N times and prints the median and
p90 wall time, with ``python -c pass`` as the floor the interpreter sets:

    .venv/bin/python -m bench.cli_startup [--runs 20]

Target (issue 9): ``--help``, ``server list`` and ``server show`` under 60 ms.
Only the standard library is used here, so the bench does not warm up or
slow down what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(url: str, token: str, method: str, path: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + "/v1" + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {token}")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


@contextmanager
def server(state: Path) -> Iterator[tuple[str, str]]:
    """A dockyard-server on 127.0.0.1; yields (url, admin token)."""
    port = free_port()
    cmd = [str(BIN / "dockyard-server"), "--state-dir", str(state), "--log-level", "warning"]
    cmd += ["--db", f"sqlite:///{state}/dockyard.db", "--listen", f"127.0.0.1:{port}"]
    with (state / "server.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(proc, url, state)
        yield url, (state / "admin.token").read_text().strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_up(proc: subprocess.Popen[bytes], url: str, state: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit((state / "server.log").read_text())
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not come up in 30 s")


def populate(url: str, admin: str) -> None:
    """A host (registered by hand, no agent), a network, flavor, image and one instance."""
    agent = call(url, admin, "POST", "/agent-tokens", {"host": "h1"})
    assert isinstance(agent, dict)
    host = {"name": "h1", "cores": 4, "memory_mb": 8192, "disk_gb": 100}
    call(url, agent["token"], "POST", "/agent/hosts", host)
    subnet = {
        "cidr": "198.18.0.0/24",
        "gateway": "198.18.0.1",
        "pools": [{"start": "198.18.0.10", "end": "198.18.0.250"}],
    }
    call(url, admin, "POST", "/networks", {"name": "net", "bridge": "dyb-br0", "subnet": subnet})
    call(url, admin, "POST", "/flavors", {"name": "small", "vcpus": 1, "memory_mb": 128})
    call(url, admin, "POST", "/images", {"name": "img", "source": "docker", "ref": "bb:latest"})
    body = {"name": "web1", "image": "img", "flavor": "small", "network": "net"}
    call(url, admin, "POST", "/instances", body)


def timed(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall seconds of each run, after one run that is not counted."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        took = time.perf_counter() - start
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.decode()}")
        if i:
            times.append(took)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument(
        "--serve", action="store_true", help="print DOCKYARD_URL/TOKEN and serve until Ctrl-C"
    )
    a = p.parse_args()
    cli = str(BIN / "dockyard")
    commands = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "dockyard --help": [cli, "--help"],
        "dockyard server list": [cli, "server", "list"],
        "dockyard server show web1": [cli, "server", "show", "web1"],
        "dockyard flavor list": [cli, "flavor", "list"],
    }
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp, server(Path(tmp)) as (
        url,
        admin,
    ):
        populate(url, admin)
        env = {**os.environ, "DOCKYARD_URL": url, "DOCKYARD_TOKEN": admin}
        if a.serve:
            print(f"export DOCKYARD_URL={url} DOCKYARD_TOKEN={admin}", flush=True)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                signal.pause()
            except KeyboardInterrupt:
                return
        print(f"{'command':<28} {'median ms':>10} {'p90 ms':>8}   ({a.runs} runs each)")
        for name, cmd in commands.items():
            t = sorted(timed(cmd, env, a.runs))
            p90 = t[min(len(t) - 1, round(0.9 * (len(t) - 1)))]
            print(f"{name:<28} {statistics.median(t) * 1000:>10.1f} {p90 * 1000:>8.1f}")


if __name__ == "__main__":
    main()
