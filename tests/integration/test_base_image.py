"""The Debian base image: supervisord as PID 1 running sshd, cron, rsyslog and
the image's own programs; root logs in with the key given at create; the
container tools show the container, not the host."""

from __future__ import annotations

import re
import signal

import pytest

from tests.integration.cluster import run, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def keys(cluster):
    out = {}
    for name in ("ops", "stranger"):
        path = cluster.root / f"id_{name}"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path))
        out[name] = path
    return out


@pytest.fixture(scope="module")
def machine(cluster, machine_image, keys):
    # df reads the agent's measure of the writable layer: refresh it every 2 s here
    cluster.kill_agent(signal.SIGTERM)
    cluster.start_agent(DOCKYARD_DISK_SECONDS="2")
    cluster.cli(
        "flavor", "create", "m512", "--vcpus", "1", "--memory", "512", "--cpu-policy", "dedicated"
    )
    key = ("--ssh-key", f"{keys['ops']}.pub", "--timeout", "180")
    s = cluster.create("box", *key, flavor="m512", image=machine_image)
    wait_for(lambda: ssh(cluster, keys["ops"], s["ip"], "true").returncode == 0, 30, "sshd")
    return s


def ssh(cluster, key, ip: str, command: str):
    options = [
        "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes",
        "ConnectTimeout=3", "LogLevel=ERROR",
    ]  # fmt: skip
    flags = [x for o in options for x in ("-o", o)]
    return cluster.probe.exec("ssh", "-i", str(key), *flags, f"root@{ip}", command, check=False)


def test_root_logs_in_with_the_key_given_at_create_and_no_other(cluster, keys, machine):
    r = ssh(cluster, keys["ops"], machine["ip"], "hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == machine["hostname"]
    r = ssh(cluster, keys["stranger"], machine["ip"], "hostname")
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_supervisord_is_pid_1_and_runs_the_key_processes(cluster, keys, machine):
    assert machine["key_processes"] == ["sshd", "cron", "rsyslog", "web"]
    assert ssh(cluster, keys["ops"], machine["ip"], "cat /proc/1/comm").stdout.strip() == (
        "supervisord"
    )
    status = ssh(cluster, keys["ops"], machine["ip"], "supervisorctl status").stdout
    for name in machine["key_processes"]:
        assert re.search(rf"^{name}\s+RUNNING", status, re.M), status
    # the image's own program serves on the instance's address
    url = f"http://{machine['ip']}:8080/"
    page = cluster.probe.exec(
        "python3", "-c", f"import urllib.request as u; print(u.urlopen('{url}', timeout=5).status)"
    )
    assert page.stdout.strip() == "200"


def test_every_instance_has_host_keys_of_its_own(cluster, keys, machine, machine_image):
    key = ("--ssh-key", f"{keys['ops']}.pub", "--timeout", "120")
    other = cluster.create("box2", *key, image=machine_image)
    fingerprint = "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"
    wait_for(lambda: ssh(cluster, keys["ops"], other["ip"], "true").returncode == 0, 30, "sshd")
    a = ssh(cluster, keys["ops"], machine["ip"], fingerprint).stdout
    b = ssh(cluster, keys["ops"], other["ip"], fingerprint).stdout
    assert a.startswith("256 SHA256:") and b.startswith("256 SHA256:") and a != b
    cluster.cli("server", "delete", "box2", "--wait")


def test_tools_show_the_container_where_sysinfo_shows_the_host(cluster, keys, machine):
    def sh(command: str) -> str:
        r = ssh(cluster, keys["ops"], machine["ip"], command)
        assert r.returncode == 0, f"{command}: {r.stderr}"
        return r.stdout

    # what a sysinfo(2) user sees: the host's RAM, which is why free/uptime/top are replaced
    sysinfo = sh(
        "python3 -c 'import ctypes; b = ctypes.create_string_buffer(128); "
        'ctypes.CDLL(None).sysinfo(b); print(int.from_bytes(b[32:40], "little"))\''
    )
    assert int(sysinfo) > 2 * 512 * 2**20
    assert sh("command -v free uptime top df loadavg").split() == [
        f"/usr/local/bin/{t}" for t in ("free", "uptime", "top", "df", "loadavg")
    ]
    mem = sh("free -b").splitlines()[1].split()
    assert mem[0] == "Mem:" and int(mem[1]) == 512 * 2**20
    assert 0 < int(mem[2]) < 100 * 2**20  # sshd, supervisord, python: tens of MB
    up = sh("uptime")
    assert re.search(r"up \d+ min,\s+\d+ users?,\s+load average: \d+\.\d\d, ", up), up
    assert "container (dockyard agent)" in sh("loadavg")
    top = sh("top -b -n 1")
    assert re.search(r"MiB Mem :\s+512\.0 total", top) and "(1 CPUs)" in top, top
    assert re.search(r"^\s+1 root .* supervisord$", top, re.M), top
    assert sh("nproc").strip() == "1"
    assert sh("grep -c ^processor /proc/cpuinfo").strip() == "1"

    # df: the root filesystem's Used is what this container wrote
    def root_used() -> int:
        return int(sh("df -k /").splitlines()[1].split()[2]) * 1024

    before = root_used()
    sh("dd if=/dev/zero of=/var/tmp/fill bs=1M count=64 oflag=direct status=none")
    wait_for(lambda: root_used() >= before + 60 * 2**20, 15, "df to count the 64 MB")
    print(f"\ndf / used: {before / 2**20:.1f} MiB -> {root_used() / 2**20:.1f} MiB")
    # /proc/diskstats: the container's own writes on the disk behind the data root. The
    # agent rewrites the view once a second: df's 60 MB above may come from a round taken
    # while dd was still writing, so wait for a round after it too
    def written() -> int:
        return sum(int(ln.split()[9]) for ln in sh("cat /proc/diskstats").splitlines())

    wait_for(lambda: written() >= 64 * 2**20 // 512, 15, "diskstats to count the 64 MB")
