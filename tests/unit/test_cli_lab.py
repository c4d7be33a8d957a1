"""`dockyard lab` refuses what it cannot do with a message that says what to change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _dockyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockyard.cli.main", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_status_of_a_dir_without_a_lab_says_how_to_make_one(tmp_path: Path) -> None:
    r = _dockyard("lab", "status", "--state-dir", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no lab there" in r.stderr and "dockyard lab up" in r.stderr


def test_down_of_a_dir_without_a_lab_does_nothing(tmp_path: Path) -> None:
    r = _dockyard("lab", "down", "--state-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_up_with_no_zone_names_the_flag(tmp_path: Path) -> None:
    r = _dockyard("lab", "up", "--hosts", "1", "--azs", ",", "--state-dir", str(tmp_path))
    assert r.returncode == 1 and "--azs" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_up_with_too_many_hosts_names_the_flag(tmp_path: Path) -> None:
    r = _dockyard("lab", "up", "--hosts", "500", "--state-dir", str(tmp_path / "x"))
    assert r.returncode == 1 and "--hosts 500" in r.stderr
    assert not (tmp_path / "x").exists()
