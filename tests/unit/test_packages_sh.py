"""scripts/packages.sh: installing Debian's prometheus and prometheus-alertmanager must
not leave Debian's own Prometheus (:9090, scraping localhost) and Alertmanager running
or enabled. Run with fake apt-get, systemctl, update-rc.d and init scripts that log
what they are asked (this machine has no systemd, and its packages are not touched)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "packages.sh"
DAEMONS = ("prometheus", "prometheus-alertmanager")


def _fake(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, Path]:
    log = tmp_path / "log"
    bin_, units, initd = tmp_path / "bin", tmp_path / "units", tmp_path / "init.d"
    for d in (bin_, units, initd):
        d.mkdir()
    for cmd in ("systemctl", "update-rc.d", "deb-systemd-helper"):
        _fake(bin_ / cmd, f'echo "{cmd} $*" >> {log}\n')
    # apt-get notes whether policy-rc.d forbade starting services while it installed
    policy = tmp_path / "policy-rc.d"
    _fake(bin_ / "apt-get", f'[ "$1" = install ] && {{ [ -x {policy} ] && {policy}; '
                            f'echo "apt-get install policy=$?" >> {log}; }}; exit 0\n')
    for name in DAEMONS:
        (units / f"{name}.service").write_text("[Service]\n")
        # an init script whose daemon runs (status 0)
        _fake(initd / name, f'echo "{name} $1" >> {log}\nexit 0\n')
    return {"tmp": tmp_path, "log": log, "bin": bin_, "units": units, "initd": initd,
            "policy": policy}  # fmt: skip


def _run(m: dict[str, Path], call: str, booted: bool) -> list[str]:
    run_dir = m["tmp"] / "run-systemd"
    if booted:
        run_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{m['bin']}:{os.environ['PATH']}",
           "DOCKYARD_UNIT_DIR": str(m["units"]), "DOCKYARD_INITD": str(m["initd"]),
           "DOCKYARD_SYSTEMD_RUN": str(run_dir),
           "DOCKYARD_POLICY_RC_D": str(m["policy"])}  # fmt: skip
    out = subprocess.run(["bash", "-c", f"source {SCRIPT} && {call}"], env=env,
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return m["log"].read_text().splitlines() if m["log"].exists() else []


def test_with_systemd_running_debians_daemons_are_stopped_and_disabled(machine) -> None:
    log = _run(machine, "disable_debian_daemons", booted=True)
    for name in DAEMONS:
        assert f"systemctl disable --now {name}.service" in log
        assert f"update-rc.d {name} disable" in log
        assert f"{name} stop" not in log  # systemd stopped it


def test_without_systemd_the_units_are_disabled_and_sysvinit_ones_stopped(machine) -> None:
    log = _run(machine, "disable_debian_daemons", booted=False)
    for name in DAEMONS:
        assert f"systemctl disable {name}.service" in log  # offline: at the next boot
        assert f"{name} stop" in log and f"update-rc.d {name} disable" in log


def test_install_forbids_starting_services_then_disables_debians(machine) -> None:
    log = _run(machine, "install_debs prometheus", booted=True)
    assert "apt-get install policy=101" in log  # no service started during the install
    assert not machine["policy"].exists()  # the policy it added is gone again
    after = log.index("apt-get install policy=101")
    assert "systemctl disable --now prometheus.service" in log[after:]
