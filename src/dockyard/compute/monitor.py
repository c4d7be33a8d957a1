"""Notice when a limit bites: OOM kills, the pids limit hit, CPU throttling.

Level-triggered like the rest of the agent: it compares the cgroup's
counters with the last ones it reported (kept in the instance's record, per
container start, so an agent restart reports nothing twice and a container
restart starts again from zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from dockyard import cgroups
from dockyard.model import EventKind, InstanceEvent

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
