"""The lab's wires: the datacenter switch, each host's namespace and NICs, the probe.

    root netns                                    host netns dyl<tag>h<i>
    ┌──────────────────────────────┐              ┌──────────────────────────────┐
    │ switch dyl<tag>sw            │   veth       │ mgmt0    198.19.M.1<i>/24      │
    │ 198.19.M.1/24 (the server) ──┼─ dyl<tag>m<i>═ (agent ↔ server)             │
    │                              ├─ dyl<tag>u<i>═ uplink0  no IP; enslaved by   │
    │                              │              │          every network bridge │
    │                              ├─ dyl<tag>pv ═ probe netns: 198.19.N.254/24  │
    └──────────────────────────────┘              └──────────────────────────────┘

Management and instance traffic use two NICs per host (an enslaved port's own
address receives nothing), as many real datacenters do. Addresses come from
198.19.0.0/16 (inside 198.18.0.0/15): M = 2k for management, N = 2k+1 for the
``lab`` network; no route out and no NAT. Every name starts with ``dyl``.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path

from dockyard.lab.procs import LabError, run

UPLINK, MGMT = "uplink0", "mgmt0"
IPT_COMMENT = "dockyard lab: the datacenter switch"
NF_SYSCTL = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def names(tag: str) -> dict[str, str]:
    return {"switch": f"dyl{tag}sw", "probe_ns": f"dyl{tag}p", "probe_if": f"dyl{tag}pv"}


def host_names(tag: str, index: int) -> dict[str, str]:
    return {
        "netns": f"dyl{tag}h{index}",
        "mgmt_if": f"dyl{tag}m{index}",
        "uplink_if": f"dyl{tag}u{index}",
    }


def pick_subnets(tag: str) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """A management /24 and an instance /24 no address of this netns overlaps."""
    used = [
        ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}").network
        for link in json.loads(run("ip", "-j", "addr", "show").stdout or "[]")
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    ]
    start = int(tag, 16) % 120
    for k in [*range(start, 120), *range(0, start)]:
        mgmt = ipaddress.IPv4Network(f"198.19.{2 * k}.0/24")
        inst = ipaddress.IPv4Network(f"198.19.{2 * k + 1}.0/24")
        if not any(u.overlaps(mgmt) or u.overlaps(inst) for u in used):
            return mgmt, inst
    raise LabError("no free /24 pair left in 198.19.0.0/16; take some labs down first")


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def make_switch(switch: str, address: str) -> None:
    run("ip", "link", "add", switch, "type", "bridge")
    run("ip", "link", "set", switch, "type", "bridge", "no_linklocal_learn", "1")
    run("ip", "addr", "add", address, "dev", switch)
    run("ip", "link", "set", switch, "up")
    if _bridged_traffic_filtered() and shutil.which("iptables"):
        # frames between two hosts cross this bridge: a FORWARD policy DROP must not eat them
        run("iptables", "-w", "-I", "FORWARD", "1", *_ipt_rule(switch))


def remove_switch(switch: str) -> None:
    if shutil.which("iptables"):
        rule = _ipt_rule(switch)
        while run("iptables", "-w", "-D", "FORWARD", *rule, check=False).returncode == 0:
            pass
    if link_exists(switch):
        run("ip", "link", "del", switch, check=False)


def _ipt_rule(switch: str) -> list[str]:
    return ["-i", switch, "-o", switch, "-m", "comment", "--comment", IPT_COMMENT, "-j", "ACCEPT"]


def _bridged_traffic_filtered() -> bool:
    try:
        return NF_SYSCTL.read_text().strip() == "1"
    except OSError:
        return False


def make_host(switch: str, netns: str, mgmt_if: str, uplink_if: str, address: str) -> None:
    """A namespace with ``mgmt0`` (``address``) and ``uplink0`` (no address), both
    plugged into ``switch``."""
    run("ip", "netns", "add", netns)
    for root_end, inside in ((mgmt_if, MGMT), (uplink_if, UPLINK)):
        run("ip", "link", "add", root_end, "type", "veth", "peer", "name", inside, "netns", netns)
        run("ip", "link", "set", root_end, "master", switch, "up")
    in_ns("ip", "addr", "add", address, "dev", MGMT, netns=netns)
    for link in ("lo", MGMT, UPLINK):
        in_ns("ip", "link", "set", link, "up", netns=netns)


def remove_netns(netns: str, *root_ends: str) -> None:
    for name in root_ends:
        if link_exists(name):
            run("ip", "link", "del", name, check=False)
    if netns_exists(netns):
        run("ip", "netns", "del", netns, check=False)


def in_ns(*cmd: str, netns: str, check: bool = True) -> str:
    """Run ``cmd`` in ``netns`` through nsenter --net (/sys stays the machine's)."""
    return run("nsenter", f"--net=/run/netns/{netns}", *cmd, check=check).stdout


def make_probe(switch: str, netns: str, root_end: str, address: str) -> None:
    """A neighbour on the switch with an address in the instance network."""
    run("ip", "netns", "add", netns)
    run("ip", "link", "add", root_end, "type", "veth", "peer", "name", "probe0", "netns", netns)
    run("ip", "link", "set", root_end, "master", switch, "up")
    in_ns("ip", "addr", "add", address, "dev", "probe0", netns=netns)
    in_ns("ip", "link", "set", "probe0", "up", netns=netns)
    in_ns("ip", "link", "set", "lo", "up", netns=netns)
