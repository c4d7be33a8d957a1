"""Prometheus and Alertmanager beside a Dockyard server, for `dockyard up --monitoring`
and `dockyard lab up --monitoring` (Debian's ``prometheus`` and
``prometheus-alertmanager``).

    write_setup()  DIR/setup.json: where the server is, the daemons' URLs, tuning
    server         dockyard-server --monitoring-setup DIR/setup.json renders
                   DIR/prometheus.yml, DIR/rules/dockyard.yml, DIR/alertmanager.yml
                   at start and on change, and POSTs /-/reload to the daemon
    start()        prometheus (data DIR/prometheus) and the alertmanager (data
                   DIR/alertmanager, no cluster port) on 127.0.0.1, waited for
    write_env()    STATE_DIR/monitoring.env: PROMETHEUS_URL, ALERTMANAGER_URL

Both daemons are found again by PID and by DIR in their command line (procs.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dockyard.lab.procs import LabError, stop_pid, stop_proc, wait_for
from dockyard.monitor.setup import FILES, Setup

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"


@dataclass(frozen=True)
class Monitoring:
    dir: Path
    prometheus_port: int
    alertmanager_port: int

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    @property
    def setup_file(self) -> Path:
        return self.dir / "setup.json"


def check_installed() -> None:
    missing = [cmd for cmd in (PROMETHEUS, ALERTMANAGER) if shutil.which(cmd) is None]
    if missing:
        raise LabError(
            f"--monitoring needs {' and '.join(missing)} on PATH: apt-get install "
            "prometheus prometheus-alertmanager (scripts/packages.sh)"
        )


def read_tuning(path: Path | None) -> dict[str, Any]:
    """An --alert-tuning file: {"interval": "5s", "grouping": {"group_wait": "1s"},
    "rules": {"ALERT" | "*": {"threshold": N, "for": "10s"}}}, checked here so a
    mistake is told before anything starts."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LabError(f"--alert-tuning {path}: {exc}") from exc
    if not isinstance(data, dict) or set(data) - {"interval", "grouping", "rules"}:
        raise LabError(f"--alert-tuning {path}: give an object of interval, grouping, rules")
    return data


def write_setup(
    mon: Monitoring, server_url: str, ca_file: str | None, tuning: Mapping[str, Any]
) -> None:
    """DIR/setup.json for the server's --monitoring-setup; LabError if it is invalid."""
    data: dict[str, Any] = {
        "server_url": server_url, "ca_file": ca_file,
        "prometheus_url": mon.prometheus_url, "alertmanager_url": mon.alertmanager_url,
        **({"interval": tuning["interval"]} if "interval" in tuning else {}),
        "grouping": tuning.get("grouping", {}), "tuning": tuning.get("rules", {}),
    }  # fmt: skip
    try:
        Setup.from_json(mon.dir, data)
    except ValueError as exc:
        raise LabError(f"--alert-tuning: {exc}") from exc
    mon.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mon.setup_file.write_text(json.dumps(data, indent=2) + "\n")


def commands(mon: Monitoring) -> dict[str, list[str]]:
    return {
        "prometheus": [
            PROMETHEUS, f"--config.file={mon.dir / FILES['prometheus']}",
            f"--storage.tsdb.path={mon.dir / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{mon.prometheus_port}",
            "--web.enable-lifecycle",  # POST /-/reload
        ],
        "alertmanager": [
            ALERTMANAGER, f"--config.file={mon.dir / FILES['alertmanager']}",
            f"--storage.path={mon.dir / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{mon.alertmanager_port}",
            "--cluster.listen-address=",  # one alertmanager: no gossip port
        ],
    }  # fmt: skip


def start(mon: Monitoring) -> dict[str, subprocess.Popen[bytes]]:
    """Both daemons, once the server has written their files; returns when both answer
    /-/ready (a LabError names the log to read otherwise)."""
    wait_for(lambda: all((mon.dir / f).exists() for f in FILES.values()), 30,
             f"the server to write the monitoring files into {mon.dir}")  # fmt: skip
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, cmd in commands(mon).items():
            log = (mon.dir / f"{name}.log").open("ab")
            procs[name] = subprocess.Popen(
                cmd, stdout=log, stderr=log, start_new_session=True, cwd=mon.dir
            )
        for name, url in (("prometheus", mon.prometheus_url),
                          ("alertmanager", mon.alertmanager_url)):  # fmt: skip
            _wait_ready(name, procs[name], url, mon.dir / f"{name}.log")
    except BaseException:
        for proc in procs.values():
            stop_proc(proc)
        raise
    return procs


def _wait_ready(name: str, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    wait_for(lambda: _ready(name, proc, url, log), 60, f"{name} on {url} (see {log})")


def _ready(name: str, proc: subprocess.Popen[bytes], url: str, log: Path) -> bool:
    if proc.poll() is not None:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"{name} exited at start: {' / '.join(tail)}")
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def write_env(state_dir: Path, mon: Monitoring) -> Path:
    path = state_dir / "monitoring.env"
    path.write_text(
        f"export PROMETHEUS_URL={mon.prometheus_url}\n"
        f"export ALERTMANAGER_URL={mon.alertmanager_url}\n"
    )
    return path


def stop(pids: Mapping[str, int], mon_dir: Path) -> None:
    """Stop the daemons `start` ran (by PID, if their command line still names DIR)."""
    for pid in pids.values():
        stop_pid(pid, str(mon_dir))
