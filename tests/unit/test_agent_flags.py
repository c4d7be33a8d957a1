"""dockyard-agent refuses impossible host flags with exit 2 and a message naming the flag.

Validation runs before any side effect (no dockerd, no sysctl, no server), so
these run the real command as a subprocess without root.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.compute.agent import AgentConfig
from dockyard.compute.cli import _check_host_flags

CORES = len(os.sched_getaffinity(0))
MEMORY_MB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


def _agent(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    token = tmp_path / "token"
    token.write_text("dy_x\n")
    return subprocess.run(
        [sys.executable, "-m", "dockyard.compute.cli", "--token-file", str(token), *flags]
        + ["--server", "http://127.0.0.1:9", "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "flags,names",
    [
        (["--reserved-cores", str(CORES)], "--reserved-cores"),
        (["--reserved-cores", "1000000"], "--reserved-cores"),
        (["--reserved-cores", f"0-{CORES - 1}"], "--reserved-cores"),
        (["--reserved-memory-mb", str(MEMORY_MB)], "--reserved-memory-mb"),
        (["--reserved-memory-mb", "-1"], "--reserved-memory-mb"),
        (["--cpu-allocation-ratio", "0"], "--cpu-allocation-ratio"),
        (["--host-name", "no spaces"], "--host-name"),
        (["--uplink", "nosuchnic0"], "--uplink"),
        (["--host-down-after", "0"], "--host-down-after"),
        (["--cgroup", "../elsewhere"], "--cgroup"),
    ],
)
def test_an_impossible_flag_exits_2_naming_it_without_a_traceback(tmp_path, flags, names):
    out = _agent(tmp_path, *flags)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert f"error: {names}" in out.stderr, out.stderr
    assert not (tmp_path / "state").exists()  # nothing was done


def test_flags_are_judged_against_the_real_host_not_a_placeholder():
    p = argparse.ArgumentParser()
    cfg = AgentConfig(
        server="http://x",
        token="t",
        host="h1",
        state_dir=Path("/nonexistent"),
        reserved_cores=[0, 1, 2],
        reserved_memory_mb=2048,
    )
    _check_host_flags(p, cfg, cores=8, memory_mb=16384)  # fine on a bigger host
    with pytest.raises(SystemExit) as exc:
        _check_host_flags(p, cfg, cores=8, memory_mb=2048)
    assert exc.value.code == 2
