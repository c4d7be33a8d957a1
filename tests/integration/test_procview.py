"""Inside a machine container, /proc shows the container, and keeps working
while the agent that refreshes it is killed and restarted."""

from __future__ import annotations

import signal
import time

import pytest

from tests.integration.cluster import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _meminfo(ctr) -> dict[str, int]:
    text = ctr.exec_run("cat /proc/meminfo").output.decode()
    return {ln.split(":")[0]: int(ln.split()[1]) for ln in text.splitlines() if ln.endswith("kB")}


def test_proc_shows_the_container_and_survives_an_agent_kill(cluster):
    cluster.cli(
        "flavor", "create", "view", "--vcpus", "1", "--memory", "256", "--cpu-policy", "dedicated"
    )
    s = cluster.create("viewer", flavor="view")
    ctr = cluster.container(s["id"])
    mem = _meminfo(ctr)
    assert mem["MemTotal"] == 256 * 1024 and mem["MemFree"] <= 256 * 1024
    cpuinfo = ctr.exec_run("cat /proc/cpuinfo").output.decode()
    assert cpuinfo.count("processor") == 1
    assert ctr.exec_run("cat /sys/devices/system/cpu/online").output.decode().strip() == "0"
    up = float(ctr.exec_run("cat /proc/uptime").output.decode().split()[0])
    assert 0 <= up < 120  # since the container started, not the host

    # read /proc in a loop inside while the agent is killed and restarted
    loop = (
        "i=0; f=0; while [ $i -lt 300 ]; do grep -q MemTotal /proc/meminfo || f=$((f+1)); "
        "cat /proc/loadavg /proc/uptime /proc/stat >/dev/null || f=$((f+1)); "
        "i=$((i+1)); sleep 0.02; done; echo failed=$f"
    )
    exe = cluster.docker.api.exec_create(ctr.id, ["sh", "-c", loop])
    out = cluster.docker.api.exec_start(exe["Id"], stream=True)
    time.sleep(0.5)
    cluster.kill_agent(signal.SIGKILL)
    time.sleep(1.5)
    cluster.start_agent()
    result = b"".join(out).decode().strip()
    print(f"\n/proc reads during an agent kill and restart: {result}")
    assert result == "failed=0"
    # the view is current again: a 50 MB tmpfs file shows up in MemFree within seconds
    before = _meminfo(ctr)["MemFree"]
    ctr.exec_run("dd if=/dev/zero of=/dev/shm/fill bs=1M count=50")
    wait_for(lambda: _meminfo(ctr)["MemFree"] <= before - 45 * 1024, 10, "MemFree to drop")
    cluster.cli("server", "delete", "viewer", "--wait")
