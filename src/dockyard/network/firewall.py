"""Agent side: the one place that speaks nft and iptables.

Per-port anti-spoofing, in one nftables table of Dockyard's own::

    table bridge dockyard
      map ports { ifname : verdict }          "dyXXXXXXXXXXX" comment BRIDGE : jump port_dyXXX…
      chain prerouting  (hook prerouting, priority filter, policy accept)
          iifname vmap @ports                 frames from other ports: no verdict, accepted
      chain port_dyXXXXXXXXXXX                one per instance port
          ether saddr != MAC drop
          arp saddr ether MAC arp saddr ip IP accept
          ip saddr IP udp sport 67 drop       no DHCP server
          ip saddr IP accept
          drop                                everything else: other ARP, IPv6, VLAN tags

Frames are judged in the bridge's prerouting hook, before the bridge learns
their source MAC, so a spoofed frame neither reaches anyone nor moves a
neighbour's MAC to the spoofer's port. Rules match the port by name, so they
can be written before the veth exists and hold when it is recreated.

Bridged traffic and iptables: with br_netfilter on (bridge-nf-call-iptables=1,
a sysctl left as found), frames between two ports of a bridge pass iptables
FORWARD. Then ``allow_port`` (and ``sync_bridges``, from the agent at most once a second)
keeps one rule per bridge there (``-i BR -o BR -j ACCEPT``, in Docker's
DOCKER-USER chain when it exists, else FORWARD); with the sysctl at 0 iptables
is not touched. A port's chain names its bridge (the element's
comment); when a bridge's last port goes, its iptables rule goes, and when
the last port goes, the table goes. A host-wide lock serialises agents.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dockyard.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)
FAMILY, TABLE = "bridge", "dockyard"
LOCK = Path("/run/dockyard-firewall.lock")
IPT_COMMENT = "dockyard: instances on this bridge"
NF_SYSCTL = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
_manage_iptables = True
CONFIRMED_FOR = 1.0  # seconds a bridge's iptables rule, once seen, is not looked for again
_seen: dict[str, float] = {}  # bridge -> when its rule was last seen or added (monotonic)
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_MISSING = "No such file or directory"  # what nft says of a table, map or chain not there


def chain_of(port: str) -> str:
    return "port_" + port.replace("-", "_")


def _table_batch() -> list[str]:
    """The table, the map and the dispatching base chain; safe to run again."""
    t = f"{FAMILY} {TABLE}"
    return [
        f"add table {t}",
        f"add map {t} ports {{ type ifname : verdict ; }}",
        f"add chain {t} prerouting {{ type filter hook prerouting priority filter ; "
        "policy accept ; }",
        f"flush chain {t} prerouting",
        f"add rule {t} prerouting iifname vmap @ports",
    ]


def port_batch(port: str, bridge: str, mac: str, ip: str) -> list[str]:
    """The nft commands that (re)write ``port``'s rules in one transaction."""
    _check_names(port, bridge)
    mac = mac.lower()
    if not _MAC.match(mac):
        raise PermanentError(f"MAC {mac!r} of port {port} is not aa:bb:cc:dd:ee:ff")
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        raise PermanentError(f"address {ip!r} of port {port} is not an IPv4 address") from None
    t, c = f"{FAMILY} {TABLE}", chain_of(port)
    elem = f'"{port}" comment "{bridge}" : jump {c}'
    return [
        *_table_batch(),
        f"add chain {t} {c}",
        f"flush chain {t} {c}",
        f"add rule {t} {c} ether saddr != {mac} drop",
        # Ethernet/IPv4 ARP only (not another protocol type wearing the same fields)
        f"add rule {t} {c} arp htype 1 arp ptype ip arp hlen 6 arp plen 4 "
        f"arp saddr ether {mac} arp saddr ip {addr} accept",
        f"add rule {t} {c} ip saddr {addr} udp sport 67 drop",
        f"add rule {t} {c} ip saddr {addr} accept",
        f"add rule {t} {c} drop",
        # add, delete, add: the element ends up present with this comment whatever was there
        f"add element {t} ports {{ {elem} }}",
        f'delete element {t} ports {{ "{port}" }}',
        f"add element {t} ports {{ {elem} }}",
    ]


def _remove_batch(port: str) -> list[str]:
    t, c = f"{FAMILY} {TABLE}", chain_of(port)
    return [
        *_table_batch(),
        f"add chain {t} {c}",
        f'add element {t} ports {{ "{port}" : jump {c} }}',
        f'delete element {t} ports {{ "{port}" }}',
        f"flush chain {t} {c}",
        f"delete chain {t} {c}",
    ]


def _check_names(*names: str) -> None:
    for name in names:
        if not _IFNAME.match(name):
            raise PermanentError(f"{name!r} is not a valid interface name")


def allow_port(port: str, bridge: str, mac: str, ip: str) -> None:
    """After: frames entering ``bridge`` from ``port`` pass only from ``mac``/``ip``,
    and iptables lets traffic between ``bridge``'s ports through. Idempotent."""
    batch = port_batch(port, bridge, mac, ip)
    with _locked():
        _nft_batch(batch)
        _allow_bridge(bridge, unless_seen_within=CONFIRMED_FOR)
    log.info("port %s on %s: only %s / %s may send", port, bridge, mac, ip)


def remove_port(port: str) -> None:
    """After: no rules for ``port``; its bridge's iptables rule goes with the bridge's
    last port, the table with the last port. Already gone: no-op."""
    _check_names(port)
    with _locked():
        before = ports()
        if port not in before and chain_of(port) not in _chains():
            return
        _nft_batch(_remove_batch(port))
        after = ports()
        bridge = before.get(port)
        if bridge and bridge not in after.values():
            _forget_bridge(bridge)
        if not after:
            _nft("delete", "table", FAMILY, TABLE)
            log.info("removed nft table %s %s: no instance ports left", FAMILY, TABLE)
    log.info("port %s: rules removed", port)


def ports() -> dict[str, str]:
    """Port name -> bridge name, for every port the table holds."""
    out: dict[str, str] = {}
    for item in _list("map", FAMILY, TABLE, "ports"):
        for key, _verdict in item.get("map", {}).get("elem", []):
            if isinstance(key, dict):
                out[str(key["elem"]["val"])] = str(key["elem"].get("comment", ""))
            else:
                out[str(key)] = ""
    return out


def _chains() -> set[str]:
    return {str(i["chain"]["name"]) for i in _list("table", FAMILY, TABLE) if "chain" in i}


def _list(*what: str) -> list[dict[str, Any]]:
    """One nft process on every reconcile pass (``ports`` via the agent's guard). A
    table or map that is not there lists as empty: nft says "No such file or
    directory" for it, and asking again whether the table exists would race an agent
    that is rebuilding it (the batches are atomic: the map comes with its table)."""
    out = _nft("-j", "list", *what, missing_ok=True)
    return list(json.loads(out or "{}").get("nftables", []))


def _nft(*args: str, stdin: str | None = None, missing_ok: bool = False) -> str:
    """nft's output; with ``missing_ok``, "" when what it names is not there."""
    try:
        proc = subprocess.run(
            ["nft", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},  # unlocalised messages: _MISSING must match
        )
    except FileNotFoundError:
        raise PermanentError(
            "nft is not installed: the agent needs it for per-port anti-spoofing "
            "(apt-get install nftables)"
        ) from None
    if proc.returncode != 0 and not (missing_ok and _MISSING in proc.stderr):
        raise TemporaryError(f"`nft {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def _nft_batch(lines: list[str]) -> None:
    _nft("-f", "-", stdin="\n".join(lines) + "\n")


@contextmanager
def _locked() -> Iterator[None]:
    """One agent at a time changes the table and the iptables rules on this host."""
    with LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- iptables: bridged traffic through FORWARD (br_netfilter)


def bridge_netfilter(policy: str) -> tuple[str, str]:
    """Say whether bridged traffic passes iptables; change nothing. Returns (state, message).

    With br_netfilter loaded and bridge-nf-call-iptables=1, frames between two
    instances on one bridge traverse the FORWARD chain, whose policy a default
    dockerd sets to DROP. The sysctl is host-wide (Docker's bridges too), so it
    stays as found; ``policy`` ``allow`` (the default) has ``allow_port`` accept
    traffic between the ports of each bridge the agent plumbs, ``leave`` adds
    nothing. ``state`` is one word for the host label ``dockyard.bridge-nf``.
    """
    global _manage_iptables
    _manage_iptables = policy == "allow"
    if not NF_SYSCTL.exists():
        return "not-loaded", "br_netfilter is not loaded: bridged traffic skips iptables"
    if NF_SYSCTL.read_text().strip() == "0":
        return "off", (
            "net.bridge.bridge-nf-call-iptables is 0 (left as is): bridged traffic skips "
            "iptables; the agent adds its bridges' ACCEPT rules if it is turned on"
            if policy == "allow"
            else "net.bridge.bridge-nf-call-iptables is 0 (left as is): bridged traffic "
            "skips iptables"
        )
    if policy == "allow":
        return "on-allowed", (
            "net.bridge.bridge-nf-call-iptables is 1 (left as is): the agent accepts traffic "
            "between the ports of each of its bridges in iptables DOCKER-USER (or FORWARD)"
        )
    return "on", (
        "net.bridge.bridge-nf-call-iptables is 1 and --bridge-nf leave: instance-to-instance "
        "traffic passes iptables FORWARD and dies if its policy is DROP"
    )


def _bridged_traffic_filtered() -> bool:
    try:
        return NF_SYSCTL.read_text().strip() == "1"
    except OSError:
        return False  # br_netfilter not loaded


def sync_bridges() -> None:
    """From the agent, at most once a second: the bridges that hold instance ports get
    their iptables rule once bridged traffic passes iptables (br_netfilter loaded, or the
    sysctl turned on, after the ports were plumbed). Idempotent."""
    if not _manage_iptables or not _bridged_traffic_filtered():
        return
    with _locked():
        for bridge in sorted(set(ports().values()) - {""}):
            _allow_bridge(bridge)


def _rule(bridge: str) -> list[str]:
    return ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", IPT_COMMENT, "-j", "ACCEPT"]


def _iptables(*args: str) -> bool:
    """Run iptables; False when it fails (a -C that does not match, or no such chain)."""
    proc = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=False)
    return proc.returncode == 0


def _chains_with_rule(bridge: str) -> list[str]:
    return [c for c in ("DOCKER-USER", "FORWARD") if _iptables("-C", c, *_rule(bridge))]


def _allow_bridge(bridge: str, unless_seen_within: float = 0.0) -> None:
    """``unless_seen_within``: seconds for which a rule this process saw or added is
    taken as still there (a port plumbed in a burst of creates), instead of two iptables
    processes per port; sync_bridges looks every time, so a rule deleted behind the
    agent's back comes back as it does for the ports already plumbed."""
    if not (_manage_iptables and _bridged_traffic_filtered() and shutil.which("iptables")):
        return
    if time.monotonic() - _seen.get(bridge, -math.inf) < unless_seen_within:
        return
    if not _chains_with_rule(bridge):
        chain = "DOCKER-USER" if _iptables("-S", "DOCKER-USER") else "FORWARD"
        if not _iptables("-I", chain, "1", *_rule(bridge)):
            raise TemporaryError(f"could not add the iptables rule for bridge {bridge} to {chain}")
        log.info("iptables %s: accept traffic between the ports of %s", chain, bridge)
    _seen[bridge] = time.monotonic()


def _forget_bridge(bridge: str) -> None:
    _seen.pop(bridge, None)
    if shutil.which("iptables") is None:
        return
    for chain in ("DOCKER-USER", "FORWARD"):
        while _iptables("-D", chain, *_rule(bridge)):
            log.info("iptables %s: removed the rule of %s (no instance ports left)", chain, bridge)


def bridge_rules() -> list[str]:
    """The iptables rules Dockyard holds, as ``iptables -S`` prints them."""
    if shutil.which("iptables") is None:
        return []
    out: list[str] = []
    for chain in ("DOCKER-USER", "FORWARD"):
        proc = subprocess.run(["iptables", "-w", "-S", chain], capture_output=True, text=True)
        out += [line for line in proc.stdout.splitlines() if IPT_COMMENT in line]
    return out
