"""Agent side: bridges and veth pairs, done with iproute2 against the real kernel.

    host netns                              container netns (pid P)
    ┌───────────────────────────┐           ┌───────────────────────┐
    │ uplink ──┐                │           │                       │
    │          ├── bridge ── dyXXXXXXXXXXX ═══ eth0  IP/prefix, MAC  │
    │          │  (no IP, no NAT; only the │  default via gateway   │
    │          │   port's anti-spoofing)   │  gratuitous ARP        │
    └───────────────────────────┘           └───────────────────────┘

Names: host end ``dy`` + 11 hex of the instance UUID; the peer is created as
eth0 right inside the container's netns (``dz`` + the same hex named it in the
host netns in older agents: still removed when found). A restarted container gets a new netns,
which takes the old pair with it; the agent re-plumbs when the container's
start time differs from the one it recorded.

The host end's anti-spoofing rules (``firewall``) are written before the
port joins the bridge and removed with it (``unplumb``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from pathlib import Path

from dockyard.errors import PermanentError, TemporaryError
from dockyard.model import Limits, NetSpec
from dockyard.network import firewall

log = logging.getLogger(__name__)
HOST_PREFIX, PEER_PREFIX, IFB_PREFIX = "dy", "dz", "dw"
_bridge_lock = threading.Lock()


def host_ifname(instance_id: str) -> str:
    return HOST_PREFIX + instance_id.replace("-", "")[:11]


def peer_ifname(instance_id: str) -> str:
    return PEER_PREFIX + instance_id.replace("-", "")[:11]


def ifb_ifname(instance_id: str) -> str:
    return IFB_PREFIX + instance_id.replace("-", "")[:11]


def _ip(*args: str, netns_pid: int | None = None, stdin: str | None = None) -> str:
    cmd = ["ip", *args]
    if netns_pid is not None:
        cmd = ["nsenter", "-t", str(netns_pid), "-n", *cmd]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TemporaryError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def links(prefix: str = "") -> set[str]:
    """Names of the host netns's links that start with ``prefix`` (from sysfs, as
    ``link_exists``: no process per reconcile pass)."""
    try:
        names = os.listdir("/sys/class/net")
    except OSError as exc:
        raise TemporaryError(f"cannot list the host's links: {exc}") from exc
    return {name for name in names if name.startswith(prefix)}


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def delete_link(name: str) -> None:
    """After: no link called ``name``. Already gone: no-op."""
    if link_exists(name):
        proc = subprocess.run(["ip", "link", "del", name], capture_output=True, text=True)
        if proc.returncode != 0 and link_exists(name):
            raise TemporaryError(f"could not delete {name}: {proc.stderr.strip()}")


def ensure_bridge(bridge: str, uplink: str | None, mtu: int) -> None:
    """After: ``bridge`` exists, is up, learns no MAC from link-local frames, with
    ``uplink`` enslaved. Idempotent.

    Link-local frames (LLDP, 802.1X, STP: 01:80:c2:00:00:0X) are consumed before
    the bridge's netfilter hooks, but by default their source MAC is learned
    first: an instance could move a neighbour's MAC onto its own port past the
    anti-spoofing rules. ``no_linklocal_learn`` stops that learning.
    """
    with _bridge_lock:
        if not link_exists(bridge):
            subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], capture_output=True)
            _ip("link", "set", bridge, "mtu", str(mtu))
            log.info("created bridge %s", bridge)
        if _sysfs_flag(bridge, "bridge/no_linklocal_learn") != 1:
            _ip("link", "set", bridge, "type", "bridge", "no_linklocal_learn", "1")
        if not _is_up(bridge):
            _ip("link", "set", bridge, "up")
        if uplink:
            _enslave(bridge, uplink)


def _sysfs_flag(name: str, attr: str) -> int | None:
    try:
        return int(Path("/sys/class/net", name, attr).read_text().strip())
    except (OSError, ValueError):
        return None


def _is_up(name: str) -> bool:
    return bool(int(Path("/sys/class/net", name, "flags").read_text(), 16) & 0x1)  # IFF_UP


def _enslave(bridge: str, uplink: str) -> None:
    if not link_exists(uplink):
        raise PermanentError(
            f"uplink {uplink} of bridge {bridge} does not exist on this host; "
            "fix the network's --uplink or the host's interfaces"
        )
    master = Path("/sys/class/net", uplink, "master")
    if master.exists():
        if master.resolve().name == bridge:
            return
        raise PermanentError(
            f"uplink {uplink} already carries bridge {master.resolve().name}; an untagged "
            f"uplink carries one network: give network {bridge}'s bridge another --uplink"
        )
    problem = uplink_problem(uplink)
    if problem:
        raise PermanentError(f"bridge {bridge}: {problem}")
    _ip("link", "set", uplink, "master", bridge, "up")


def uplink_problem(uplink: str) -> str | None:
    """Why ``uplink`` must not be enslaved to a bridge, or None: a NIC that carries an
    address of this host (eth0 with the host's IP) would lose it to the bridge, and the
    host its connection (the address does not move to the bridge by itself)."""
    try:
        found = json.loads(_ip("-j", "addr", "show", "dev", uplink) or "[]")
    except (TemporaryError, ValueError):
        return None  # no such link: the caller says so
    held = [
        f"{a['local']}/{a['prefixlen']}"
        for link in found
        for a in link.get("addr_info", [])
        if a.get("local") and not str(a["local"]).lower().startswith("fe80:")
    ]
    if not held:
        return None
    return (
        f"uplink {uplink} carries this host's address {', '.join(held)}: enslaving it to a "
        "bridge would cut the host off. Give a NIC without an address (a second NIC, or "
        "move the address to the bridge yourself first)"
    )


def prepare(instance_id: str, net: NetSpec) -> None:
    """What plumbing needs before the container runs, so it can overlap dockerd's start.

    After: the bridge exists with its uplink, the port's anti-spoofing rules are
    written (by name, before the port joins the bridge: its first frame is already
    judged), and no veth of an earlier plumbing is left. Idempotent."""
    ensure_bridge(net.bridge, net.uplink, net.mtu)
    firewall.allow_port(host_ifname(instance_id), net.bridge, net.mac, net.ip)
    delete_link(host_ifname(instance_id))
    delete_link(peer_ifname(instance_id))


def plumb(instance_id: str, pid: int, net: NetSpec, *, prepared: bool = False) -> str:
    """Give the container (netns of ``pid``) its eth0 on the bridge. Returns the host end.

    Before: the container runs (and ``prepare`` ran since the last plumbing if
    ``prepared``). After: a fresh veth pair, eth0 with IP, MAC, MTU and default
    route, and a gratuitous ARP sent. Any previous host end is replaced, so
    calling it twice is safe.

    Two processes: one ``ip -batch`` in the host netns creates the pair with its
    peer already inside the container's netns as eth0 (no move between
    namespaces, which costs the kernel an RCU grace period) and joins the host
    end to the bridge; one ``nsenter`` configures eth0. The gratuitous ARP goes
    out in the background (arping takes ~80 ms to exit).
    """
    if not prepared:
        prepare(instance_id, net)
    host_if, mtu = host_ifname(instance_id), str(net.mtu)
    host = [
        f"link add {host_if} mtu {mtu} type veth peer name eth0 address {net.mac} mtu {mtu} "
        f"netns {pid}",
        f"link set {host_if} master {net.bridge} up",
    ]
    inside = [
        f"addr add {net.ip}/{net.prefixlen} dev eth0",
        "link set lo up",
        "link set eth0 up",
    ]
    if net.gateway:
        inside.append(f"route replace default via {net.gateway} dev eth0 onlink")
    try:
        _ip("-batch", "-", stdin="\n".join(host) + "\n")
        _configure_inside(pid, inside)
    except TemporaryError:
        delete_link(host_if)
        raise
    announce(pid, net.ip)
    return host_if


def _configure_inside(pid: int, batch: list[str]) -> None:
    """Run ``batch`` through ip in the netns of ``pid``."""
    _ip("-batch", "-", netns_pid=pid, stdin="\n".join(batch) + "\n")


def unplumb(instance_id: str) -> None:
    """After: none of the instance's links, and no anti-spoofing rules for its port
    (with the last port, the nft table and its bridge's iptables rule). Idempotent."""
    for name in (host_ifname(instance_id), peer_ifname(instance_id), ifb_ifname(instance_id)):
        delete_link(name)
    firewall.remove_port(host_ifname(instance_id))


def remove_stale(name: str) -> None:
    """Delete a link the reconcile plan found stale, and its port's rules if it had any."""
    delete_link(name)
    if name.startswith(HOST_PREFIX):
        firewall.remove_port(name)


def announce(pid: int, ip: str) -> None:
    """Send a gratuitous ARP from eth0 so neighbours learn the (new) MAC at once."""
    cmd = ["nsenter", "-t", str(pid), "-n", "arping", "-U", "-c", "1", "-w", "0", "-I", "eth0", ip]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        log.warning("arping is not installed; neighbours learn %s's MAC on first contact", ip)
        return
    threading.Thread(target=proc.wait, daemon=True).start()


def shape(instance_id: str, host_if: str, limits: Limits, *, fresh: bool = False) -> None:
    """Network IO limits on the host end of the veth, where the instance cannot lift them.

    Towards the instance (its ingress): a TBF root qdisc on the host veth.
    From the instance (its egress): the host veth's ingress is redirected by
    mirred to an IFB device whose root qdisc is a TBF. No limit: no qdisc,
    no IFB. Idempotent (replace, or delete what is not wanted). ``fresh``: ``plumb``
    just made ``host_if``, which has no qdisc to delete (no tc process then, on every
    start of an instance without network limits).
    """
    ifb = ifb_ifname(instance_id)
    unwanted = []  # deleted in one tc process, whether they exist or not
    if limits.net_ingress_kbit:
        _tbf(host_if, limits.net_ingress_kbit, limits.net_burst_kb)
    else:
        unwanted.append(f"qdisc del dev {host_if} root")
    if limits.net_egress_kbit:
        if not link_exists(ifb):
            _ip("link", "add", ifb, "type", "ifb")
        _ip("link", "set", ifb, "up")
        _tbf(ifb, limits.net_egress_kbit, limits.net_burst_kb)
        _tc("qdisc", "replace", "dev", host_if, "handle", "ffff:", "ingress")
        _tc(
            "filter",
            "replace",
            "dev",
            host_if,
            "parent",
            "ffff:",
            "protocol",
            "all",
            "prio",
            "1",
            "u32",
            "match",
            "u32",
            "0",
            "0",
            "action",
            "mirred",
            "egress",
            "redirect",
            "dev",
            ifb,
        )
    else:
        unwanted.append(f"qdisc del dev {host_if} ingress")
        delete_link(ifb)
    if unwanted and not fresh:
        subprocess.run(
            ["tc", "-force", "-batch", "-"],
            input="\n".join(unwanted) + "\n",
            capture_output=True,
            text=True,
            check=False,
        )


def _tbf(dev: str, rate_kbit: int, burst_kb: int | None) -> None:
    # default burst: 10 ms at the rate, at least 32 KiB (TBF needs rate/HZ at the least)
    burst = burst_kb * 1024 if burst_kb else max(32 * 1024, rate_kbit * 1000 // 8 // 100)
    _tc(
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        f"{rate_kbit}kbit",
        "burst",
        str(burst),
        "latency",
        "50ms",
    )


def _tc(*args: str, check: bool = True) -> None:
    proc = subprocess.run(["tc", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise TemporaryError(f"`tc {' '.join(args)}` failed: {proc.stderr.strip()}")


def ensure_address(link: str, cidr: str) -> None:
    """After: ``link`` carries the address ``cidr`` (e.g. 198.18.0.254/24). Idempotent."""
    out = json.loads(_ip("-j", "addr", "show", "dev", link) or "[]")
    ip = cidr.split("/")[0]
    if any(a.get("local") == ip for entry in out for a in entry.get("addr_info", [])):
        return
    _ip("addr", "add", cidr, "dev", link)


# --- what is (consistency checks): read from sysfs and /proc, no process per call


def _master(name: str, sys_net: Path) -> str | None:
    """The bridge ``name`` is enslaved to; "" when none; None when there is no ``name``."""
    if not (sys_net / name).exists():
        return None
    master = sys_net / name / "master"
    return master.resolve().name if master.exists() else ""


def bridge_state(
    bridge: str, uplink: str | None, sys_net: Path = Path("/sys/class/net")
) -> dict[str, str]:
    """``network.BRIDGE.bridge``: up, down or absent; with an uplink,
    ``network.BRIDGE.uplink``: enslaved, absent, or what it is enslaved to instead."""
    if not (sys_net / bridge).exists():
        state = "absent"
    else:
        flags = int((sys_net / bridge / "flags").read_text(), 16)
        state = "up" if flags & 0x1 else "down"
    out = {f"network.{bridge}.bridge": state}
    if uplink:
        master = _master(uplink, sys_net)
        out[f"network.{bridge}.uplink"] = (
            "absent"
            if master is None
            else "enslaved"
            if master == bridge
            else f"on {master}"
            if master
            else "not enslaved"
        )
    return out


def port_view(
    instance_id: str, pid: int, proc: Path = Path("/proc"), sys_net: Path = Path("/sys/class/net")
) -> tuple[str, str | None, tuple[str, ...] | None]:
    """The instance's port as it is: (bridge of its host end, "" when there is no host
    end or it is on no bridge; eth0's MAC inside, None when unreadable; the IPv4
    addresses inside but loopback, None when unreadable). The MAC is read from the
    container's own sysfs (mounted in its netns), the addresses from its netns's FIB."""
    bridge = _master(host_ifname(instance_id), sys_net) or ""
    try:
        mac: str | None = (proc / str(pid) / "root/sys/class/net/eth0/address").read_text().strip()
    except OSError:
        mac = None
    try:
        ips: tuple[str, ...] | None = _local_ips((proc / str(pid) / "net/fib_trie").read_text())
    except OSError:
        ips = None
    return bridge, mac, ips


def _local_ips(fib_trie: str) -> tuple[str, ...]:
    """The addresses marked ``/32 host LOCAL`` in /proc/net/fib_trie, but 127/8."""
    found, last = set(), ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|--") or text.startswith("+--"):
            last = text[3:].strip().split(" ")[0]
        elif text.startswith("/32 host LOCAL") and last and not last.startswith("127."):
            found.add(last)
    return tuple(sorted(found))
