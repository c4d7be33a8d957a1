"""Consistency checks on a real host: a container's limit changed behind Dockyard's back
(`docker update`) shows up as drift, and a host whose real sysctl differs from the
declared baseline is listed by `dockyard host check`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dockyard.network.plumbing import port_view
from tests.integration.cluster import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

PID_MAX = "sysctl.kernel.pid_max"


def _check(cluster):
    r = cluster.cli("host", "check", "itest", "-f", "json", check=False)
    assert r.returncode in (0, 3), r.stderr
    return r.returncode, json.loads(r.stdout)[0]


def test_the_real_hosts_baseline_is_reported(cluster):
    def reported():
        return _check(cluster)[1]["reported_at"]

    wait_for(reported, 30, "the agent's first baseline")
    items = {b["item"]: b for b in cluster.api("GET", "/hosts/baseline")}
    real = Path("/proc/sys/kernel/pid_max").read_text().strip()
    assert items[PID_MAX]["value"] == real
    assert items["dockerd.live_restore"]["value"] in ("true", "false")
    assert items["dockerd.storage_driver"]["value"]
    assert (
        items["kernel.release"]["value"] == Path("/proc/sys/kernel/osrelease").read_text().strip()
    )


def test_a_sysctl_that_differs_from_the_declared_baseline_is_listed(cluster):
    real = Path("/proc/sys/kernel/pid_max").read_text().strip()
    wanted = str(int(real) - 1)
    cluster.cli("host", "baseline", "set", f"{PID_MAX}={wanted}")
    try:
        code, check = _check(cluster)
        assert code == 3
        assert {"item": PID_MAX, "value": real, "expected": wanted, "source": "declared"} in (
            check["drift"]
        )
        table = cluster.cli("host", "check", "--all", check=False)
        assert table.returncode == 3 and PID_MAX in table.stdout and wanted in table.stdout
    finally:
        cluster.cli("host", "baseline", "unset", PID_MAX)
    assert _check(cluster)[1]["drift"] == []


def test_a_memory_limit_changed_behind_dockyards_back_is_drift(cluster):
    s = cluster.create("drifty")
    try:
        container = cluster.container(s["id"])
        # what the agent reads of the port from the real container: as plumbed
        pid = container.attrs["State"]["Pid"]
        t0 = time.perf_counter()
        bridge, mac, ips = port_view(s["id"], pid)
        read_ms = (time.perf_counter() - t0) * 1000
        assert (bridge, ips) == (cluster.bridge, (s["ip"],)) and mac and len(mac) == 17
        container.update(mem_limit="64m", memswap_limit="64m")  # docker update, not Dockyard
        changed = time.monotonic()

        def drifted():
            return cluster.cli_json("server", "show", "drifty")["drift"] or None

        # only the memory: port, MAC, IP, mounts and the other limits are as specified
        [d] = wait_for(drifted, 60, "the memory drift in `server show`", interval=1)
        print(
            f"\ndrift: shown {time.monotonic() - changed:.1f} s after `docker update`; "
            f"reading the port (sysfs + FIB) took {read_ms:.2f} ms"
        )
        assert (d["item"], d["value"], d["expected"]) == (
            "memory",
            str(64 * 2**20),
            str(128 * 2**20),
        )
        code, check = _check(cluster)
        assert code == 3 and check["instances"][0]["name"] == "drifty"
        # the bridge of a network with an instance here is part of the host's baseline
        items = {b["item"]: b for b in cluster.api("GET", "/hosts/baseline")}
        assert items[f"network.{cluster.bridge}.bridge"]["source"] == "required"
        assert not any(d["item"].startswith("network.") for d in check["drift"])  # it is up
        shown = cluster.cli("server", "show", "drifty").stdout
        assert f"memory: {64 * 2**20}, expected {128 * 2**20}" in shown
    finally:
        cluster.cli("server", "delete", "drifty", "--wait")
