"""The agent's consistency checks: its host's baseline, and its instances' drift.

    heartbeat ─► host_baseline()  driver facts (docker info) + HostSurvey (/proc, /sys)
                                  + Plumber.bridges (its networks' bridges) + agent version
    monitor pass, every DRIFT_ROUNDS ─► InstanceChecker.check(pairs)
        Meter.seen (cgroup limits) + Observed.mounts + Plumber.port (bridge, MAC, IP)
        ─► monitor/drift.instance_drift ─► confirmed on two passes in a row ─► reported
           with the next heartbeat and served as dockyard_instance_drift samples

Reading only: nothing here changes the host. Which value is right for a host is
the server's call (monitor/drift.py), not the agent's.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard import __version__
from dockyard.compute import procfs
from dockyard.compute.driver import ComputeDriver, Observed
from dockyard.compute.plumber import Plumber
from dockyard.compute.store import Store
from dockyard.errors import DockyardError
from dockyard.model import DesiredInstance, Drift, InstanceDrift
from dockyard.monitor.drift import instance_drift

if TYPE_CHECKING:
    from dockyard.compute.monitor import Meter

log = logging.getLogger("dockyard.agent")
DRIFT_ROUNDS = 10  # monitor rounds (of about a second) between two instance checks
ABSENT = "absent"
SYSCTLS = (
    "kernel.pid_max",
    "net.netfilter.nf_conntrack_max",
    "net.bridge.bridge-nf-call-iptables",
)


class HostSurvey:
    """The kernel's part of the host's baseline, read from ``proc`` and ``sys``."""

    def __init__(self, proc: Path = Path("/proc"), sys: Path = Path("/sys")) -> None:
        self.proc, self.sys = proc, sys

    def items(self) -> dict[str, str]:
        out = {
            "kernel.release": self._read("sys/kernel/osrelease"),
            "cgroup.version": "2" if (self.sys / "fs/cgroup/cgroup.controllers").exists() else "1",
            "module.br_netfilter": "loaded"
            if (self.sys / "module/br_netfilter").exists()
            else ABSENT,
        }
        for name in SYSCTLS:
            out[f"sysctl.{name}"] = self._read("sys/" + name.replace(".", "/"))
        return out

    def _read(self, rel: str) -> str:
        try:
            return (self.proc / rel).read_text().strip()
        except OSError:
            return ABSENT  # the module that provides it is not loaded


def host_baseline(
    driver: ComputeDriver,
    plumber: Plumber,
    survey: HostSurvey,
    wanted: Iterable[DesiredInstance],
    labels: dict[str, str],
) -> dict[str, str] | None:
    """This host's baseline now; None while dockerd does not answer (the server keeps
    the last one rather than call every dockerd item drifted)."""
    try:
        facts = driver.info().facts
    except DockyardError as exc:
        log.info("no baseline this time: %s", exc.detail)
        return None
    nets = {w.net.bridge: w.net for w in wanted if w.power != "deleted"}
    out = {**facts, **survey.items(), **plumber.bridges(list(nets.values()))}
    out["agent.version"] = __version__
    if "dockyard.bridge-nf" in labels:
        out["agent.bridge_nf"] = labels["dockyard.bridge-nf"]
    return {k: _printable(v)[:256] for k, v in out.items()}


def _printable(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable())


class InstanceChecker:
    """Each running instance's container against its desired spec. A difference is
    reported once two checks in a row saw it (a step applying a resize, a port being
    re-plumbed after a restart, is not drift)."""

    def __init__(self, store: Store, meter: Meter, plumber: Plumber | None) -> None:
        self.store, self.meter, self.plumber = store, meter, plumber
        self._suspect: dict[str, list[Drift]] = {}
        self._confirmed: dict[str, InstanceDrift] | None = None  # None: not checked yet
        self._lock = threading.Lock()

    def report(self) -> list[InstanceDrift] | None:
        """The confirmed drift, for the heartbeat and /metrics; None before a check."""
        with self._lock:
            return None if self._confirmed is None else list(self._confirmed.values())

    def check(self, pairs: Iterable[tuple[DesiredInstance, Observed]]) -> None:
        now: dict[str, list[Drift]] = {}
        names: dict[str, str] = {}
        for want, obs in pairs:
            if want.power != "running" or want.task_state is not None:
                continue  # a step is on its way: it changes the container
            found = self._drift(want, obs)
            if found is not None:
                now[want.id], names[want.id] = found, want.name
        confirmed = {}
        for iid, items in now.items():
            before = {(d.item, d.value) for d in self._suspect.get(iid, [])}
            kept = [d for d in items if (d.item, d.value) in before]
            if kept:
                confirmed[iid] = InstanceDrift(instance_id=iid, name=names[iid], items=kept)
        with self._lock:
            self._suspect, self._confirmed = now, confirmed

    def _drift(self, want: DesiredInstance, obs: Observed) -> list[Drift] | None:
        try:
            seen = self.meter.seen(want.id, obs.pid)
        except (OSError, ValueError):
            return None  # it stopped meanwhile
        own = set(self.store.managed_files(want.id)) | set(procfs.TARGETS.values())
        own.add(procfs.VIEW_TARGET)
        mounts = tuple((t, ro) for _, t, ro in obs.mounts if t not in own)
        seen = dataclasses.replace(seen, mounts=mounts)
        if self.plumber is not None:
            bridge, mac, ips = self.plumber.port(want.id, obs.pid)
            seen = dataclasses.replace(seen, port_bridge=bridge, mac=mac, ips=ips)
        return instance_drift(want, seen)
