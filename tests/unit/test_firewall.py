"""The nft rules an instance port gets, and what the agent says about br_netfilter."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from dockyard.errors import PermanentError
from dockyard.network import firewall


def test_a_port_passes_only_its_own_mac_and_ip_and_no_dhcp_server():
    batch = firewall.port_batch("dy0123456789a", "dyt-abc", "02:00:C6:12:01:0A", "198.18.1.10")
    head = "add rule bridge dockyard port_dy0123456789a "
    rules = [line.removeprefix(head) for line in batch if line.startswith(head)]
    assert rules == [
        "ether saddr != 02:00:c6:12:01:0a drop",
        "arp htype 1 arp ptype ip arp hlen 6 arp plen 4 "
        "arp saddr ether 02:00:c6:12:01:0a arp saddr ip 198.18.1.10 accept",
        "ip saddr 198.18.1.10 udp sport 67 drop",
        "ip saddr 198.18.1.10 accept",
        "drop",  # IPv6 (router advertisements included), VLAN tags, other ARP
    ]
    # the port's element names its bridge, and ends up present whatever was there
    assert batch[-3:] == [
        'add element bridge dockyard ports { "dy0123456789a" comment "dyt-abc" : '
        "jump port_dy0123456789a }",
        'delete element bridge dockyard ports { "dy0123456789a" }',
        'add element bridge dockyard ports { "dy0123456789a" comment "dyt-abc" : '
        "jump port_dy0123456789a }",
    ]


@pytest.mark.parametrize(
    ("port", "bridge", "mac", "ip"),
    [
        ("dy0123456789a", "br; flush ruleset", "02:00:c6:12:01:0a", "198.18.1.10"),
        ("dy0123456789a", "br0", "02:00:c6:12:01:0a; drop", "198.18.1.10"),
        ("dy0123456789a", "br0", "02:00:c6:12:01:0a", "2001:db8::1"),
        ("dy0123456789a", "br0", "02:00:c6:12:01:0a", "198.18.1.10 accept"),
    ],
)
def test_nothing_but_names_and_addresses_reaches_nft(port, bridge, mac, ip):
    with pytest.raises(PermanentError):
        firewall.port_batch(port, bridge, mac, ip)


@pytest.mark.parametrize(
    ("content", "policy", "state"),
    [
        (None, "allow", "not-loaded"),
        ("0\n", "allow", "off"),
        ("1\n", "allow", "on-allowed"),
        ("1\n", "leave", "on"),
    ],
)
def test_the_agent_reports_bridge_nf_and_leaves_the_sysctl(
    tmp_path, monkeypatch, content, policy, state
):
    sysctl = tmp_path / "bridge-nf-call-iptables"
    if content is not None:
        sysctl.write_text(content)
    monkeypatch.setattr(firewall, "NF_SYSCTL", sysctl)
    try:
        assert firewall.bridge_netfilter(policy)[0] == state
    finally:
        firewall.bridge_netfilter("allow")
    assert (sysctl.read_text() if content is not None else None) == content


def test_the_kernel_accepts_a_ports_rules():
    """The rule text is checked by nft against this kernel, in a namespace of its own."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root and nft (scripts/test installs nftables)")
    batch = firewall.port_batch("dy0123456789a", "dyt-abc", "02:00:c6:12:01:0a", "198.18.1.10")
    proc = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", "-"],
        input="\n".join(batch) + "\n",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_a_bridges_iptables_rule_is_looked_for_once_per_burst_and_every_sync(
    tmp_path, monkeypatch
):
    """Ports plumbed within CONFIRMED_FOR of seeing their bridge's rule run no iptables;
    sync_bridges looks every time (and puts back a rule deleted meanwhile)."""
    rules: set[str] = {"dyt-abc"}
    calls: list[tuple[str, ...]] = []

    def iptables(*args: str) -> bool:
        calls.append(args)
        bridge = args[args.index("-i") + 1] if "-i" in args else None
        if args[0] == "-C":
            return bridge in rules
        if args[0] == "-I":
            rules.add(str(bridge))
        return True

    monkeypatch.setattr(firewall, "LOCK", tmp_path / "lock")
    monkeypatch.setattr(firewall, "_nft_batch", lambda lines: None)
    monkeypatch.setattr(firewall, "_iptables", iptables)
    monkeypatch.setattr(firewall, "_bridged_traffic_filtered", lambda: True)
    monkeypatch.setattr(firewall, "ports", lambda: {"dy0123456789a": "dyt-abc"})
    monkeypatch.setattr(firewall.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(firewall, "_seen", {})
    firewall.allow_port("dy0123456780b", "dyt-abc", "02:00:c6:12:01:0a", "198.18.1.10")
    looked = len(calls)
    assert looked > 0  # the first port looked
    for n in (1, 2):
        firewall.allow_port(f"dy012345678{n}b", "dyt-abc", "02:00:c6:12:01:0a", "198.18.1.10")
    assert len(calls) == looked  # the next two took its word
    rules.clear()  # deleted behind the agent's back
    firewall.sync_bridges()
    assert "dyt-abc" in rules and calls[-1][0] == "-I"
    monkeypatch.setattr(firewall, "CONFIRMED_FOR", 0.0)
    before = len(calls)
    firewall.allow_port("dy0123456789c", "dyt-abc", "02:00:c6:12:01:0a", "198.18.1.10")
    assert len(calls) > before
