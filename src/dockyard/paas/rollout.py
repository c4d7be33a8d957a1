"""The deploy planner: from a stack's members and its target release, the next step.

Pure and level-triggered: it is called again on every pass with what is true now, so
a step that was applied, half-applied or lost (a server restart) is simply planned
again. It never acts on a busy member (a task in flight, e.g. being rebuilt or
deleted); those count as not ready until their task ends.

    members (release, ready, busy, leaving) + target + budget -> Plan
      in-place: rebuild old members where they stand, at most max_unavailable down
      surge:    create new members first (at most max_surge extra), then delete old

Invariants (tests/unit/test_rollout.py, Hypothesis): applying a plan never makes
fewer than ``replicas - max_unavailable`` members ready when at least that many were,
and a surge never holds more than ``replicas + max_surge`` members.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class Strategy(StrEnum):
    in_place = "in-place"
    surge = "surge"


@dataclass(frozen=True)
class Member:
    """One instance of the stack as the planner sees it.

    ready: running and healthy (or running, without a health check), no task;
    busy: a task is in flight (spawning, rebuilding, ...); leaving: being deleted."""

    id: str
    release: str
    ready: bool
    busy: bool = False
    leaving: bool = False


@dataclass(frozen=True)
class Budget:
    replicas: int
    max_unavailable: int  # effective: at least 1 for in-place
    max_surge: int  # effective: at least 1 for a surge whose max_unavailable is 0


@dataclass
class Plan:
    """What to do next. Empty lists and ``done`` False: wait for members to settle."""

    rebuild: list[str] = field(default_factory=list)
    create: int = 0
    delete: list[str] = field(default_factory=list)
    done: bool = False
    rollback: bool = False
    why: str = ""

    @property
    def acts(self) -> bool:
        return bool(self.rebuild or self.create or self.delete)


def budget(replicas: int, max_unavailable: str, max_surge: str, strategy: Strategy) -> Budget:
    """Resolve "N" or "N%" of ``replicas`` (unavailable rounds down, surge up, as
    Kubernetes does) and make sure the rollout can move: in-place needs one member
    down at a time; a surge with nothing down needs one extra."""
    mu = _resolve(max_unavailable, replicas, math.floor)
    ms = _resolve(max_surge, replicas, math.ceil)
    if strategy == Strategy.in_place:
        return Budget(replicas, max(1, mu), 0)
    return Budget(replicas, mu, ms if mu > 0 else max(1, ms))


def _resolve(text: str, replicas: int, rounding: Callable[[float], int]) -> int:
    if text.endswith("%"):
        return rounding(replicas * int(text[:-1]) / 100)
    return int(text)


def plan(
    members: list[Member], target: str, strategy: Strategy, b: Budget, overdue: bool = False
) -> Plan:
    """The next step towards ``b.replicas`` ready members of ``target``."""
    live = [m for m in members if not m.leaving]
    new = [m for m in live if m.release == target]
    old = [m for m in live if m.release != target]
    settled = not any(m.leaving for m in members)
    if not old and len(new) == b.replicas and all(m.ready for m in new) and settled:
        return Plan(done=True)
    if overdue:
        return Plan(rollback=True, why="not ready in time")
    if strategy == Strategy.in_place:
        return _in_place(members, new, old, b)
    return _surge(members, new, old, b)


def _spare(members: list[Member], b: Budget) -> int:
    """How many ready members may stop being ready now."""
    ready = sum(1 for m in members if m.ready and not m.leaving)
    return ready - (b.replicas - b.max_unavailable)


def _in_place(members: list[Member], new: list[Member], old: list[Member], b: Budget) -> Plan:
    out = Plan()
    live = len(new) + len(old)
    if live < b.replicas:
        out.create = b.replicas - live
    # excess first from the old, the not ready first: they cost no readiness
    excess = sorted(old, key=_keep_order) + sorted(new, key=_keep_order)
    removable = [m for m in excess if not m.busy][: max(0, live - b.replicas)]
    spare = _spare(members, b)
    for m in removable:
        if m.ready and spare <= 0:
            continue
        spare -= m.ready
        out.delete.append(m.id)
    gone = set(out.delete)
    for m in sorted(old, key=_keep_order):
        if m.id in gone or m.busy:
            continue
        if m.ready and spare <= 0:
            continue
        spare -= m.ready
        out.rebuild.append(m.id)
    return out


def _surge(members: list[Member], new: list[Member], old: list[Member], b: Budget) -> Plan:
    out = Plan()
    held = len(members)  # leaving members still hold their resources
    room = b.replicas + b.max_surge - held
    missing = b.replicas - len(new)
    out.create = max(0, min(missing, room))
    spare = _spare(members, b)
    # old members go once there are more than replicas (the not ready ones first), or,
    # with no room left to surge into, to make room (within max_unavailable)
    candidates = sorted(old, key=_keep_order)
    if len(new) > b.replicas:
        candidates += sorted(new, key=_keep_order)[: len(new) - b.replicas]
    surplus = max(0, len(old) + len(new) - b.replicas) + max(0, missing - out.create)
    for m in candidates:
        if surplus <= 0:
            break
        if m.busy or (m.ready and spare <= 0):
            continue
        spare -= m.ready
        surplus -= 1
        out.delete.append(m.id)
    return out


def _keep_order(m: Member) -> tuple[bool, str]:
    """Not-ready members first (losing them costs nothing), then by id for stability."""
    return (m.ready, m.id)
