"""Lab fixtures: a real `dockyard lab` of two hosts in two zones, taken down afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dockyard.lab.procs import dockyard


def _can_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, links, dockerds)"
    for tool in ("dockerd", "ip", "nsenter", "unshare", "busybox", "nft", "docker"):
        if shutil.which(tool) is None:
            return f"needs {tool} on PATH (scripts/packages.sh)"
    return None


class LabRun:
    """The CLI against one lab's state dir, as a user types it."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.env = dict(os.environ)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return dockyard(*args, env=self.env, check=check)

    def lab(self, verb: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli("lab", verb, *args, "--state-dir", str(self.state), check=check)

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-f", "json").stdout)

    def record(self) -> dict[str, Any]:
        return dict(json.loads((self.state / "lab.json").read_text()))

    def login(self) -> None:
        for line in (self.state / "admin.env").read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            self.env[key] = value


@contextmanager
def running_lab(*up_args: str) -> Iterator[LabRun]:
    """A lab made by `dockyard lab up ARGS`, logged in; taken down afterwards (its logs
    copied to DOCKYARD_KEEP_LOGS when set)."""
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    state = Path(tempfile.mkdtemp(prefix="dyl-test-"))
    run = LabRun(state)
    try:
        run.lab("up", *up_args)
        run.login()
        yield run
    finally:
        run.lab("down", check=False)  # keeps only the logs under the state dir
        keep = os.environ.get("DOCKYARD_KEEP_LOGS")  # a directory to copy them to
        if keep:
            shutil.copytree(state, Path(keep) / state.name, dirs_exist_ok=True)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabRun]:
    with running_lab("--hosts", "2", "--azs", "az1,az2") as run:
        yield run
