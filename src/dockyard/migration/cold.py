"""A cold migration's state machine: pure, the database applies what it decides.

    queued ──turn──► snapshotting ──snapshot_done──► starting ──target_active──► finished
                  │                              │
                  └──snapshot_failed, timed_out, └──target_failed, timed_out,
                     source_down, target_down       target_down
                                  ╲                ╱
                                   ►   error    ◄─    (the instance runs on the source again)

``step(status, event)`` names the next status and the one :class:`Act` that gets
there; db/move_steps.py carries the act out in the same transaction. An event
that does not fit the status (a late or repeated report) changes nothing, so an
agent that reports twice, or a checker that runs on two servers, cannot move an
instance twice. ``check`` turns the clock and the hosts' liveness into an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Status(StrEnum):
    queued = "queued"
    snapshotting = "snapshotting"  # the source stops, commits, pushes the root fs and volumes
    starting = "starting"  # the instance belongs to the target; the source holds its copy
    finished = "finished"
    error = "error"


IN_FLIGHT = frozenset({Status.queued, Status.snapshotting, Status.starting})


class Event(StrEnum):
    snapshot_done = "snapshot_done"  # the source pushed the snapshot (and volumes)
    snapshot_failed = "snapshot_failed"  # the source reported an error
    target_active = "target_active"  # the target runs the instance
    target_failed = "target_failed"  # the target reported an error
    timed_out = "timed_out"
    source_down = "source_down"
    target_down = "target_down"
    turn = "turn"  # a queued migration's turn came (a drain moves a few at a time)


class Act(StrEnum):
    nothing = "nothing"  # a stale event: leave everything as it is
    begin = "begin"  # the source gets its snapshot order; the phase clock starts
    move = "move"  # the instance (host, cores, image) goes to the target; the source holds
    finish = "finish"  # the source lets go: its copy, claim and volume data go
    roll_back = "roll_back"  # the target lets go; the instance runs on the source again


@dataclass(frozen=True)
class Transition:
    status: Status
    act: Act


_FAIL = Transition(Status.error, Act.roll_back)
_TABLE: dict[tuple[Status, Event], Transition] = {
    (Status.snapshotting, Event.snapshot_done): Transition(Status.starting, Act.move),
    (Status.starting, Event.target_active): Transition(Status.finished, Act.finish),
    **{
        (Status.snapshotting, e): _FAIL
        for e in (Event.snapshot_failed, Event.timed_out, Event.source_down, Event.target_down)
    },
    **{(Status.starting, e): _FAIL for e in (Event.target_failed, Event.timed_out)},
    (Status.starting, Event.target_down): _FAIL,
    (Status.queued, Event.turn): Transition(Status.snapshotting, Act.begin),
    (Status.queued, Event.target_down): _FAIL,
    (Status.queued, Event.source_down): _FAIL,
}


def step(status: Status, event: Event) -> Transition:
    """What ``event`` does to a migration in ``status``; stale events do nothing.
    A source that goes down while the target starts changes nothing: the target no
    longer needs it, and its held copy is removed when it returns."""
    return _TABLE.get((status, event), Transition(status, Act.nothing))


def since(
    status: Status,
    started_at: datetime,
    stopped_at: datetime | None,
    seconds: dict[str, float] | None = None,
) -> datetime:
    """When the current phase's clock started: snapshotting counts from its start
    (the request, or a queued migration's turn), starting from the handover to the
    target (the snapshot's report: the source's stop plus what the agent says its
    commit, push and volume copy took), so a slow push does not eat the target's
    time and each phase gets the whole ``timeout``."""
    if status == Status.starting and stopped_at is not None:
        return stopped_at + timedelta(seconds=after_stop(seconds or {}))
    return started_at


def check(
    status: Status,
    phase_since: datetime,
    now: datetime,
    timeout: timedelta,
    source_up: bool,
    target_up: bool,
) -> Event | None:
    """The event the clock and the hosts' liveness raise for an in-flight migration."""
    if status not in IN_FLIGHT:
        return None
    if not target_up:
        return Event.target_down
    if not source_up and status != Status.starting:
        return Event.source_down
    if status == Status.queued:
        return None  # waiting for its turn has no deadline
    if now - phase_since > timeout:
        return Event.timed_out
    return None


def reason(event: Event, source: str, target: str, timeout: timedelta, detail: str = "") -> str:
    """Why a migration failed, in words for the record and the action log."""
    secs = f"{timeout.total_seconds():g}"
    words = {
        Event.snapshot_failed: f"the snapshot on {source} failed: {detail}",
        Event.target_failed: f"{target} could not start it: {detail}",
        Event.timed_out: f"no progress within {secs} s (--migration-timeout)",
        Event.source_down: f"the source host {source} went down",
        Event.target_down: f"the target host {target} is down",
    }
    return words.get(event, event.value)[:1000]


def stopped_at(reported_at: datetime, seconds: dict[str, float]) -> datetime:
    """When the source stopped the instance: the snapshot's report came after its
    commit, flatten, push and volume copy, whose durations the agent reports."""
    return reported_at - timedelta(seconds=after_stop(seconds))


ROOTFS = ("commit", "flatten", "push")  # one after the other, beside "volumes"


def after_stop(seconds: dict[str, float]) -> float:
    """The source's seconds from its stop to its report: the root filesystem's steps
    and the volumes' copy run side by side, anything else after them."""
    positive = {k: v for k, v in seconds.items() if v > 0 and k != "stop"}
    rootfs = sum(positive.pop(k, 0.0) for k in ROOTFS)
    return max(rootfs, positive.pop("volumes", 0.0)) + sum(positive.values())


def downtime(stopped: datetime | None, resumed: datetime | None) -> float | None:
    """Seconds the instance was not running: from the source's stop to the target's
    start (None until both are known)."""
    if stopped is None or resumed is None:
        return None
    return round(max(0.0, (resumed - stopped).total_seconds()), 3)
