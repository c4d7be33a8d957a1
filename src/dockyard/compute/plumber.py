"""The plumber interface: what the agent needs from the host's network.

    Worker ── prepare, plumb, ──────────┐
              shape, unplumb            │
    Agent ─── links / remove_stale ─────┼─► Plumber ─► HostPlumber ─► network/plumbing.py (ip, tc)
              sync_bridges, unguarded,  │                         └─► network/firewall.py (nft,
              guard, bridge_netfilter ──┘                              iptables)
                                          └─► FakePlumber (in memory, for unit tests)

Like the compute driver (``driver.py``), every method is idempotent and says
what holds before and after. Errors are DockyardError subclasses:
``TemporaryError`` when retrying later may help (a link busy, nft failing),
``PermanentError`` when it will not (an uplink that does not exist).
"""

from __future__ import annotations

from typing import Protocol

from dockyard.errors import DockyardError, TemporaryError
from dockyard.model import Limits, NetSpec
from dockyard.network import firewall, plumbing
from dockyard.network.plumbing import host_ifname, ifb_ifname, peer_ifname


class Plumber(Protocol):
    def prepare(self, instance_id: str, net: NetSpec) -> None:
        """What ``plumb`` needs that does not need the container running, so the worker
        runs it while dockerd starts the container. After: the bridge exists with its
        uplink, the port's anti-spoofing rules admit only ``net``'s MAC and IP, and no
        veth of an earlier plumbing is left. Idempotent."""
        ...

    def plumb(self, instance_id: str, pid: int, net: NetSpec, *, prepared: bool = False) -> str:
        """Give the running container whose PID 1 is ``pid`` its eth0 on ``net``'s bridge;
        returns the host end's name.

        Before: the container runs. After: the bridge exists with its uplink, the port's
        anti-spoofing rules admit only ``net``'s MAC and IP, a fresh veth pair joins the
        bridge, and eth0 inside has the IP, MAC, MTU and default route. Already plumbed:
        the old pair is replaced, so calling it twice is safe. ``prepared``: ``prepare``
        ran for this plumbing (after the container's last start or stop), so it is not
        done again."""
        ...

    def shape(self, instance_id: str, limits: Limits, *, fresh: bool = False) -> None:
        """After: the host end carries the network IO limits of ``limits`` in both
        directions, and nothing when ``limits`` has none. Before: the instance is
        plumbed; its host end gone is a TemporaryError (the next pass plumbs again).
        ``fresh``: ``plumb`` made the host end since it was last shaped, so it carries no
        limit yet (nothing to remove from it)."""
        ...

    def unplumb(self, instance_id: str) -> None:
        """After: none of the instance's links and no port rules for it (with a bridge's
        last port, that bridge's iptables rule; with the last port, the nft table).
        Already gone: no-op."""
        ...

    def links(self) -> set[str]:
        """Names of every link in the host's network namespace, whoever made them."""
        ...

    def unguarded(self, instance_ids: set[str]) -> set[str]:
        """Those of ``instance_ids`` whose host end exists but has no anti-spoofing
        rules (flushed by someone, or plumbed by an agent that had none). Changes
        nothing."""
        ...

    def guard(self, instance_id: str, net: NetSpec) -> None:
        """After: the instance's port admits only ``net``'s MAC and IP, as plumb leaves
        it, without touching the veth. Already guarded: rewritten the same."""
        ...

    def remove_stale(self, name: str) -> None:
        """After: no link called ``name`` and, if it was an instance's host end, no port
        rules for it. Already gone: no-op. The caller decides what is stale; the
        plumber deletes what it is told."""
        ...

    def sync_bridges(self) -> None:
        """After: when bridged traffic passes iptables, each bridge holding instance
        ports has its ACCEPT rule (a sysctl turned on after plumbing is caught here).
        Already there: no-op."""
        ...

    def bridge_netfilter(self, policy: str) -> tuple[str, str]:
        """Say whether bridged traffic passes iptables and remember ``policy`` (``allow``:
        later plumbing adds bridge rules; ``leave``: it adds none). Changes nothing on
        the host. Returns (state for the host label ``dockyard.bridge-nf``, message)."""
        ...

    def port(self, instance_id: str, pid: int) -> tuple[str, str | None, tuple[str, ...] | None]:
        """The instance's port as it is, for consistency checks: (the bridge its host end
        is on, "" when none; eth0's MAC inside, None when unreadable; its IPv4 addresses
        inside, None when unreadable). Changes nothing; runs no process."""
        ...

    def bridges(self, nets: list[NetSpec]) -> dict[str, str]:
        """The host's baseline items of ``nets``' bridges: ``network.BRIDGE.bridge`` (up,
        down, absent) and ``network.BRIDGE.uplink`` (enslaved, absent, ...). Changes
        nothing."""
        ...


class HostPlumber:
    """The real plumber: iproute2, tc, nft and iptables against this host's kernel.

    ``uplink`` (the agent's --uplink): the NIC every network bridge enslaves when the
    network names none, so instances on hosts that share that segment share one L2
    network. Frames from it pass the anti-spoofing table untouched (it is no port)."""

    def __init__(self, uplink: str | None = None) -> None:
        self.uplink = uplink

    def _net(self, net: NetSpec) -> NetSpec:
        if net.uplink or not self.uplink:
            return net
        return net.model_copy(update={"uplink": self.uplink})

    def prepare(self, instance_id: str, net: NetSpec) -> None:
        plumbing.prepare(instance_id, self._net(net))

    def plumb(self, instance_id: str, pid: int, net: NetSpec, *, prepared: bool = False) -> str:
        return plumbing.plumb(instance_id, pid, self._net(net), prepared=prepared)

    def shape(self, instance_id: str, limits: Limits, *, fresh: bool = False) -> None:
        plumbing.shape(instance_id, host_ifname(instance_id), limits, fresh=fresh)

    def unplumb(self, instance_id: str) -> None:
        plumbing.unplumb(instance_id)

    def links(self) -> set[str]:
        return plumbing.links()

    def unguarded(self, instance_ids: set[str]) -> set[str]:
        ports = firewall.ports()
        return {
            i
            for i in instance_ids
            if host_ifname(i) not in ports and plumbing.link_exists(host_ifname(i))
        }

    def guard(self, instance_id: str, net: NetSpec) -> None:
        firewall.allow_port(host_ifname(instance_id), net.bridge, net.mac, net.ip)

    def remove_stale(self, name: str) -> None:
        plumbing.remove_stale(name)

    def sync_bridges(self) -> None:
        firewall.sync_bridges()

    def bridge_netfilter(self, policy: str) -> tuple[str, str]:
        return firewall.bridge_netfilter(policy)

    def port(self, instance_id: str, pid: int) -> tuple[str, str | None, tuple[str, ...] | None]:
        return plumbing.port_view(instance_id, pid)

    def bridges(self, nets: list[NetSpec]) -> dict[str, str]:
        out: dict[str, str] = {}
        for net in map(self._net, nets):
            try:
                out.update(plumbing.bridge_state(net.bridge, net.uplink))
            except (OSError, ValueError):
                continue  # went away while read: the next heartbeat says
        return out


class FakePlumber:
    """In memory, with the same contract: what a test can see of the host's network.

    ``ports`` maps a host end to the network it was plumbed on (its anti-spoofing
    rules follow it), ``shaped`` an instance to its limits, ``allowed`` the bridges
    with an iptables rule. ``foreign`` links were made by someone else (another
    agent, a test); ``filtered`` says bridged traffic passes iptables (br_netfilter
    on); ``fail_next`` makes the next call of a method raise."""

    def __init__(self, filtered: bool = False) -> None:
        self.ports: dict[str, NetSpec] = {}
        self.shaped: dict[str, Limits] = {}
        self.ifbs: set[str] = set()
        self.prepared: dict[str, NetSpec] = {}  # instance -> net of its last prepare
        self.foreign: set[str] = set()
        self.unguarded_ports: set[str] = set()  # host ends whose rules are gone
        self.allowed: set[str] = set()
        self.filtered = filtered
        self.policy = "allow"
        self._faults: dict[str, DockyardError] = {}

    def fail_next(self, method: str, error: DockyardError) -> None:
        self._faults[method] = error

    def _enter(self, method: str) -> None:
        fault = self._faults.pop(method, None)
        if fault is not None:
            raise fault

    def prepare(self, instance_id: str, net: NetSpec) -> None:
        self._enter("prepare")
        self.prepared[instance_id] = net

    def plumb(self, instance_id: str, pid: int, net: NetSpec, *, prepared: bool = False) -> str:
        self._enter("plumb")
        if prepared and self.prepared.get(instance_id) != net:
            raise AssertionError(f"plumb(prepared=True) of {instance_id} without prepare")
        if pid <= 0:
            raise TemporaryError(f"instance {instance_id} is not running: no netns to plumb")
        self.ports[host_ifname(instance_id)] = net
        if self.filtered and self.policy == "allow":
            self.allowed.add(net.bridge)
        return host_ifname(instance_id)

    def shape(self, instance_id: str, limits: Limits, *, fresh: bool = False) -> None:
        self._enter("shape")
        if host_ifname(instance_id) not in self.ports:
            raise TemporaryError(f"{host_ifname(instance_id)} does not exist")
        self.shaped[instance_id] = limits
        if limits.net_egress_kbit:
            self.ifbs.add(ifb_ifname(instance_id))
        else:
            self.ifbs.discard(ifb_ifname(instance_id))

    def unplumb(self, instance_id: str) -> None:
        self._enter("unplumb")
        for name in (host_ifname(instance_id), peer_ifname(instance_id), ifb_ifname(instance_id)):
            self._delete(name)
        self.shaped.pop(instance_id, None)
        self.prepared.pop(instance_id, None)

    def links(self) -> set[str]:
        self._enter("links")
        return set(self.ports) | self.unguarded_ports | self.ifbs | self.foreign

    def flush_rules(self) -> None:
        """What `nft flush ruleset` does to a host: the veths stay, the rules go."""
        self.unguarded_ports |= set(self.ports)
        self.ports.clear()

    def unguarded(self, instance_ids: set[str]) -> set[str]:
        self._enter("unguarded")
        return {i for i in instance_ids if host_ifname(i) in self.unguarded_ports}

    def guard(self, instance_id: str, net: NetSpec) -> None:
        self._enter("guard")
        self.unguarded_ports.discard(host_ifname(instance_id))
        self.ports[host_ifname(instance_id)] = net

    def remove_stale(self, name: str) -> None:
        self._enter("remove_stale")
        self._delete(name)

    def sync_bridges(self) -> None:
        self._enter("sync_bridges")
        if self.filtered and self.policy == "allow":
            self.allowed |= {net.bridge for net in self.ports.values()}

    def bridge_netfilter(self, policy: str) -> tuple[str, str]:
        self.policy = policy
        if not self.filtered:
            return "off", "fake host: bridged traffic skips iptables"
        state = "on-allowed" if policy == "allow" else "on"
        return state, f"fake host: bridged traffic passes iptables ({state})"

    def port(self, instance_id: str, pid: int) -> tuple[str, str | None, tuple[str, ...] | None]:
        net = self.ports.get(host_ifname(instance_id))
        return ("", None, None) if net is None else (net.bridge, net.mac, (net.ip,))

    def bridges(self, nets: list[NetSpec]) -> dict[str, str]:
        return {f"network.{net.bridge}.bridge": "up" for net in nets}

    def _delete(self, name: str) -> None:
        net = self.ports.pop(name, None)
        self.unguarded_ports.discard(name)
        self.ifbs.discard(name)
        self.foreign.discard(name)
        if net is not None and net.bridge not in {n.bridge for n in self.ports.values()}:
            self.allowed.discard(net.bridge)  # the bridge's last port: its rule goes
