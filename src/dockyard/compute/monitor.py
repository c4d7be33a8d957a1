"""The agent's monitor: each running instance's /proc view, and limits that bite.

    every MONITOR_SECONDS, for each instance running as wanted (LimitMonitor.run):
      ViewWriter.refresh / refresh_disk   the instance's /proc view (compute/procfs.py)
      Meter.counters ─► events() ─► Server.events   OOM kills, pids limit hit, CPU throttling

Level-triggered like the rest of the agent: it compares the cgroup's
counters with the last ones it reported (kept in the instance's record, per
container start, so an agent restart reports nothing twice and a container
restart starts again from zero). ``Meter`` is the seam to the cgroup files
(``CgroupMeter``; ``FakeMeter`` in tests).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from threading import Event
from typing import Protocol

from dockyard import cgroups
from dockyard.compute.client import Server
from dockyard.compute.driver import Observed
from dockyard.compute.metrics import Figures, read_figures
from dockyard.compute.procfs import ProcView, ViewWriter
from dockyard.compute.store import Store
from dockyard.errors import DockyardError
from dockyard.model import DesiredInstance, EventKind, InstanceEvent
from dockyard.monitor.drift import InstanceSeen

log = logging.getLogger("dockyard.agent")
MONITOR_SECONDS = 1.0  # /proc views and limit counters
THROTTLE_REPORT_SECONDS = (
    60.0  # a capped busy instance throttles all the time: say it once a minute
)


@dataclass(frozen=True)
class Counters:
    oom_kills: int = 0
    pids_hit: int = 0
    nr_throttled: int = 0
    throttled_usec: int = 0


def read(cg: cgroups.Cgroup) -> Counters:
    """The counters of a container's cgroup (three files). OSError when it is gone."""
    nr_throttled, throttled_usec = cgroups.throttling(cg)
    return Counters(
        oom_kills=cgroups.oom_kills(cg),
        pids_hit=cgroups.pids_hit(cg),
        nr_throttled=nr_throttled,
        throttled_usec=throttled_usec,
    )


def events(
    prev: Counters, now: Counters, pids_limit: int, memory_mb: int, report_throttling: bool
) -> tuple[list[InstanceEvent], Counters]:
    """Events for what changed, and the counters to remember as reported."""
    at = datetime.now(UTC)
    out = []
    if now.oom_kills > prev.oom_kills:
        n = now.oom_kills - prev.oom_kills
        out.append(
            InstanceEvent(
                time=at,
                kind=EventKind.oom_kill,
                message=(f"{n} process(es) OOM-killed at the {memory_mb} MB memory limit"),
            )
        )
    if now.pids_hit > prev.pids_hit:
        n = now.pids_hit - prev.pids_hit
        out.append(
            InstanceEvent(
                time=at,
                kind=EventKind.pids_limit,
                message=(f"the pids limit of {pids_limit} tasks refused {n} fork(s)"),
            )
        )
    remembered = now
    if now.nr_throttled > prev.nr_throttled:
        if report_throttling:
            secs = (now.throttled_usec - prev.throttled_usec) / 1e6
            out.append(
                InstanceEvent(
                    time=at,
                    kind=EventKind.cpu_throttled,
                    message=(
                        f"CPU throttled in {now.nr_throttled - prev.nr_throttled} periods "
                        f"({secs:.1f} s) by its CPU cap"
                    ),
                )
            )
        else:  # keep counting from the last report
            remembered = Counters(
                now.oom_kills, now.pids_hit, prev.nr_throttled, prev.throttled_usec
            )
    return out, remembered


class Meter(Protocol):
    """What the agent reads from a running container's cgroup."""

    def memory_used(self, instance_id: str, pid: int) -> int:
        """Bytes of memory the container whose PID 1 is ``pid`` uses now.
        Container gone: OSError."""
        ...

    def counters(self, instance_id: str, pid: int) -> Counters:
        """The container's limit counters since it started. Container gone: OSError."""
        ...

    def seen(self, instance_id: str, pid: int) -> InstanceSeen:
        """The limits the kernel enforces on the container now (memory, CPU share, cap
        and cpuset, pids), for consistency checks. Container gone: OSError."""
        ...

    def figures(self, instance_id: str, pid: int) -> Figures:
        """Everything /metrics says of the container's cgroup. Container gone: OSError."""
        ...


class CgroupMeter:
    """The real meter: the cgroup files, found through the view writer's cache."""

    def __init__(self, views: ProcView) -> None:
        self.views = views

    def memory_used(self, instance_id: str, pid: int) -> int:
        return cgroups.memory(self.views.cgroup_of(instance_id, pid)).usage

    def counters(self, instance_id: str, pid: int) -> Counters:
        return read(self.views.cgroup_of(instance_id, pid))

    def seen(self, instance_id: str, pid: int) -> InstanceSeen:
        cg = self.views.cgroup_of(instance_id, pid)
        _, memory = cgroups.usage_and_limit(cg)
        pids = cgroups.pids(cg).limit
        return InstanceSeen(
            cgroup_version=cg.version,
            memory_bytes=-1 if memory is None else memory,
            cpu_weight=cgroups.cpu_weight(cg),
            cpu_cap=cgroups.cpu_cap(cg) or 0.0,
            cpuset=cgroups.cpuset(cg),
            pids_limit=-1 if pids is None else pids,
        )

    def figures(self, instance_id: str, pid: int) -> Figures:
        return read_figures(self.views.cgroup_of(instance_id, pid))


class FakeMeter:
    """In memory: a test sets what each instance uses and counts."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}  # instance id -> bytes
        self.counted: dict[str, Counters] = {}
        self.enforced: dict[str, InstanceSeen] = {}  # nothing set: nothing judged
        self.figured: dict[str, Figures] = {}

    def memory_used(self, instance_id: str, pid: int) -> int:
        return self.used.get(instance_id, 0)

    def counters(self, instance_id: str, pid: int) -> Counters:
        return self.counted.get(instance_id, Counters())

    def seen(self, instance_id: str, pid: int) -> InstanceSeen:
        return self.enforced.get(instance_id, InstanceSeen())

    def figures(self, instance_id: str, pid: int) -> Figures:
        return self.figured.get(instance_id, Figures())


class LimitMonitor:
    """Refresh each running instance's /proc view and report the limits that bit."""

    def __init__(self, store: Store, client: Server, views: ViewWriter, meter: Meter) -> None:
        self.store, self.client, self.views, self.meter = store, client, views, meter
        self._last_throttle: dict[str, float] = {}  # instance id -> monotonic time reported

    def run(
        self,
        stop: Event,
        running: Callable[[], list[tuple[DesiredInstance, Observed]]],
        after: Callable[[list[tuple[DesiredInstance, Observed]]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Until ``stop``: every MONITOR_SECONDS, ``check`` each of ``running()``, then
        hand the same list to ``after`` (the agent's consistency checks).

        Rounds start at a fixed rate, not a second after the last one ended: a round of
        200 instances on a saturated host takes a good part of a second, and waiting a
        whole second after it left views nearly two seconds old. A round that overran
        its slot is followed at once by the next, never by a burst of catching up."""
        next_at = clock()
        while True:
            next_at += MONITOR_SECONDS
            if stop.wait(max(0.0, next_at - clock())):
                return
            next_at = max(next_at, clock())  # late: the beat starts again from now, no burst
            pairs = running()
            for want, obs in pairs:
                self.check(want, obs)
            if after is not None:
                after(pairs)

    def check(self, want: DesiredInstance, obs: Observed) -> None:
        """One round for one running instance; a container gone meanwhile is skipped."""
        try:
            if want.limits.procview:
                self.views.refresh(
                    want.id,
                    self.store.files_dir(want.id),
                    obs.pid,
                    obs.started_at,
                    want.limits.swap_mb,
                )
            self.views.refresh_disk(
                want.id, self.store.files_dir(want.id), obs.writable_dir, want.disk_gb
            )
            self._check_limits(want, obs)
        except (OSError, ValueError):
            return  # it stopped meanwhile; the next round sees its new cgroup
        except DockyardError as exc:
            log.warning("could not report events of %s: %s", want.name, exc.detail)

    def _check_limits(self, want: DesiredInstance, obs: Observed) -> None:
        saved = self.store.counters(want.id, obs.started_at)
        prev = Counters(**saved)
        now = self.meter.counters(want.id, obs.pid)
        since = time.monotonic() - self._last_throttle.get(want.id, -1e9)
        due = since >= THROTTLE_REPORT_SECONDS
        evs, remembered = events(prev, now, want.pids_limit, want.memory_mb, due)
        if remembered == prev and saved:
            return
        if evs:
            self.client.events(want.id, evs)
            for ev in evs:
                log.info("%s: %s", want.name, ev.message)
                if ev.kind == EventKind.cpu_throttled:
                    self._last_throttle[want.id] = time.monotonic()
        self.store.save_counters(want.id, obs.started_at, dataclasses.asdict(remembered))
