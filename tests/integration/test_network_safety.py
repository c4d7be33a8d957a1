"""What an instance sends on its bridge, on the real kernel (root).

A tenant with full control of its network namespace (here: nsenter from the
host, as a tenant with CAP_NET_ADMIN would) puts a neighbour's IP or MAC on
eth0 and announces it. The neighbour must stay reachable at its own MAC, and
the spoofed frames must reach nobody. And with br_netfilter on and iptables
FORWARD at DROP (a default dockerd), instances on one bridge still reach each
other while the host's sysctl stays as it was.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dockyard.network import firewall
from tests.integration.cluster import run, wait_for

NF_SYSCTL = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def in_netns(cluster, instance_id: str, *cmd: str, check: bool = True):
    pid = cluster.container(instance_id).attrs["State"]["Pid"]
    return run("nsenter", "-t", str(pid), "-n", *cmd, check=check)


def probe_echo_requests(cluster) -> int:
    """ICMP echo requests the probe namespace has received so far."""
    snmp = cluster.probe.exec("cat", "/proc/net/snmp").stdout.splitlines()
    names, values = [line.split() for line in snmp if line.startswith("Icmp:")][:2]
    return int(values[names.index("InEchos")])


def probe_mac_of(cluster, ip: str) -> str | None:
    out = cluster.probe.exec("ip", "neigh", "show", ip).stdout
    m = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return m.group(1) if m else None


def port_of(inst) -> str:
    return "dy" + inst["id"].replace("-", "")[:11]


@pytest.fixture
def pair(cluster):
    a, b = cluster.create("spoofer"), cluster.create("victim")
    yield a, b
    for name in ("spoofer", "victim"):
        cluster.cli("server", "delete", name, "--wait", check=False)


def _settle_probe(cluster, a, b) -> None:
    """The probe knows A and B at their own MACs, older than the ARP lock time (1 s),
    so that a gratuitous ARP would move its entry if one got through."""
    assert cluster.probe.ping(a["ip"]) and cluster.probe.ping(b["ip"])
    assert probe_mac_of(cluster, b["ip"]) == b["mac"]
    time.sleep(1.5)


def test_an_instance_that_takes_a_neighbours_ip_reaches_nobody(cluster, pair):
    a, b = pair
    probe_ip = cluster.probe.address.split("/")[0]
    assert set(firewall.ports()) >= {port_of(a), port_of(b)}
    _settle_probe(cluster, a, b)
    seen = probe_echo_requests(cluster)

    in_netns(cluster, a["id"], "ip", "addr", "add", f"{b['ip']}/24", "dev", "eth0")
    spoof = ("busybox", "arping", "-U", "-c", "2", "-s", b["ip"], "-I", "eth0", b["ip"])
    in_netns(cluster, a["id"], *spoof, check=False)
    in_netns(cluster, a["id"], "ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", b["ip"],
             probe_ip, check=False)  # fmt: skip

    assert probe_mac_of(cluster, b["ip"]) == b["mac"]
    assert cluster.probe.ping(b["ip"])
    assert probe_echo_requests(cluster) == seen, "A's pings from B's address reached the probe"

    in_netns(cluster, a["id"], "ip", "addr", "del", f"{b['ip']}/24", "dev", "eth0")
    assert cluster.probe.ping(a["ip"])  # with its own address, A works
    ping = cluster.container(a["id"]).exec_run(f"ping -c 2 -W 1 {b['ip']}")
    assert ping.exit_code == 0, ping.output.decode()


def test_an_instance_that_takes_a_neighbours_mac_reaches_nobody(cluster, pair):
    a, b = pair
    probe_ip = cluster.probe.address.split("/")[0]
    _settle_probe(cluster, a, b)
    seen = probe_echo_requests(cluster)

    in_netns(cluster, a["id"], "ip", "link", "set", "eth0", "address", b["mac"])
    for spoof in (
        ("busybox", "arping", "-U", "-c", "2", "-I", "eth0", a["ip"]),
        ("ping", "-c", "3", "-i", "0.2", "-W", "1", probe_ip),
    ):
        in_netns(cluster, a["id"], *spoof, check=False)

    # had the bridge learnt B's MAC on A's port, the probe's pings would go to A
    assert cluster.probe.ping(b["ip"], count=2)
    assert probe_mac_of(cluster, b["ip"]) == b["mac"]
    assert probe_echo_requests(cluster) == seen, "frames from B's MAC on A's port got through"

    in_netns(cluster, a["id"], "ip", "link", "set", "eth0", "address", a["mac"])
    assert cluster.probe.ping(a["ip"], count=2)


LLDP_FROM = """
import socket, sys
dst, src = bytes.fromhex("0180c200000e"), bytes.fromhex(sys.argv[1].replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(5):
    s.send(dst + src + b"\\x88\\xcc" + bytes(46))
"""


def bridge_port_of_mac(bridge: str, mac: str) -> str | None:
    """The port the bridge has learnt ``mac`` on (None: not learnt)."""
    for line in run("bridge", "fdb", "show", "br", bridge).stdout.splitlines():
        f = line.split()
        if f and f[0] == mac and "dev" in f:
            return f[f.index("dev") + 1]
    return None


def test_link_local_frames_with_a_neighbours_mac_do_not_move_it(cluster, pair):
    """LLDP/802.1X frames skip the bridge's netfilter hooks; their source MAC must
    not be learnt, or an instance could pull a neighbour's traffic to its port."""
    a, b = pair
    _settle_probe(cluster, a, b)
    in_netns(cluster, a["id"], "python3", "-c", LLDP_FROM, b["mac"])
    assert bridge_port_of_mac(cluster.bridge, b["mac"]) in (None, port_of(b))
    assert cluster.probe.ping(b["ip"], count=1), "the victim's traffic went to the spoofer"


def test_rules_flushed_behind_the_agents_back_come_back(cluster, pair):
    """`nft flush ruleset` on the host must not leave instances open to spoofing."""
    a, b = pair
    run("nft", "delete", "table", "bridge", "dockyard")
    wait_for(
        lambda: {port_of(a), port_of(b)} <= set(firewall.ports()),
        20,
        "the agent to restore the ports' rules (it checks on every pass, 10 s apart)",
        interval=0.5,
    )
    assert cluster.probe.ping(b["ip"]) and cluster.probe.ping(a["ip"])


def test_port_rules_go_with_the_instances(cluster):
    a, b = cluster.create("short-a"), cluster.create("short-b")
    assert {port_of(a), port_of(b)} <= set(firewall.ports())
    # a stopped instance has no port, and no rules; started again, it has both
    cluster.cli("server", "stop", "short-a", "--wait")
    assert port_of(a) not in firewall.ports()
    cluster.cli("server", "start", "short-a", "--wait")
    assert port_of(a) in firewall.ports() and cluster.probe.ping(a["ip"], count=2)
    cluster.cli("server", "delete", "short-a", "--wait")
    assert port_of(a) not in firewall.ports() and port_of(b) in firewall.ports()
    cluster.cli("server", "delete", "short-b", "--wait")
    left = firewall.ports()
    assert not {port_of(a), port_of(b)} & set(left)
    chains = run("nft", "list", "table", "bridge", "dockyard", check=False).stdout
    assert firewall.chain_of(port_of(a)) not in chains
    if not left:  # other Dockyard instances on this machine keep the table
        assert not chains, "the nft table stayed after the last instance port went"


# --- br_netfilter: bridged traffic through iptables FORWARD at DROP


@contextmanager
def bridged_traffic_through_forward_drop() -> Iterator[None]:
    """br_netfilter on and FORWARD at DROP, as a default dockerd leaves a host, for as
    short a time as possible (the sysctl and the policy are host-wide), then as found."""
    if not NF_SYSCTL.exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True)
    if not NF_SYSCTL.exists():
        pytest.fail("this kernel has no br_netfilter (bridge-nf-call-iptables missing)")
    sysctl_before = NF_SYSCTL.read_text()
    policy = re.search(r"-P FORWARD (\w+)", run("iptables", "-w", "-S", "FORWARD").stdout)
    assert policy is not None
    try:
        NF_SYSCTL.write_text("1\n")
        run("iptables", "-w", "-P", "FORWARD", "DROP")
        yield
    finally:
        run("iptables", "-w", "-P", "FORWARD", policy.group(1), check=False)
        NF_SYSCTL.write_text(sysctl_before)


@pytest.fixture
def iptables_as_found() -> Iterator[None]:
    """iptables-nft makes its `ip filter` table on first use: if the test made it, and
    it is empty at the end, it goes."""
    existed = run("nft", "list", "table", "ip", "filter", check=False).returncode == 0
    yield
    if not existed and "-A " not in run("iptables", "-w", "-S").stdout:
        run("nft", "delete", "table", "ip", "filter", check=False)


def our_bridge_rules(cluster) -> list[str]:
    return [r for r in firewall.bridge_rules() if f"-i {cluster.bridge} " in r]


def test_instances_reach_each_other_through_forward_drop_and_the_sysctl_stays(
    cluster, iptables_as_found
):
    a, b = cluster.create("fwd-a"), cluster.create("fwd-b")
    try:
        with bridged_traffic_through_forward_drop():
            # the agent starts on a host with the sysctl at 1, as after a reboot
            cluster.kill_agent(signal.SIGTERM)
            cluster.start_agent()
            wait_for(lambda: our_bridge_rules(cluster), 15, "the agent's iptables rule")
            ping = cluster.container(a["id"]).exec_run(f"ping -c 2 -W 1 {b['ip']}")
            sysctl = NF_SYSCTL.read_text().strip()
            label = cluster.api("GET", "/hosts/itest")["labels"]["dockyard.bridge-nf"]
            # anti-spoofing survived the agent's restart: the rules are kernel state
            ports = firewall.ports()
        assert ping.exit_code == 0, ping.output.decode()
        assert sysctl == "1", "the agent changed net.bridge.bridge-nf-call-iptables"
        assert label == "on-allowed"
        assert {port_of(a), port_of(b)} <= set(ports)
        assert len(our_bridge_rules(cluster)) == 1  # once, not once per plumb or restart
    finally:
        cluster.cli("server", "delete", "fwd-a", "--wait", check=False)
        cluster.cli("server", "delete", "fwd-b", "--wait", check=False)
    assert our_bridge_rules(cluster) == []
