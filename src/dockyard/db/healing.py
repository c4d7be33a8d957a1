"""Self-healing of stacks at rest (no deploy running), a pass of the deploy controller.

    unhealthy member     restarted (reboot); still unhealthy a progress deadline
                         later: restarted again; after MAX_RESTARTS: replaced
    stopped member       (SHUTOFF: someone stopped it; a stack's members run) started,
                         the same count of tries, then replaced
    member in ERROR      replaced (its fault in the event)
    member stuck in a task  (spawning, rebooting, powering on or off, rebuilding) for
                         longer than the stack's progress deadline: replaced; an admin's
                         migration or a snapshot is left alone
    member on a down host  deleted (carried out when the host returns) and replaced
                         elsewhere, without waiting for an admin -- only while the
                         down hosts are a minority of the cloud's: when most look down
                         at once (this server just restarted, or is cut off from them)
                         the fault is more likely here than there, and nothing is deleted
    fewer members than replicas (one deleted by hand, one replaced): created

Replacements for a member's own failure (unhealthy, stopped, ERROR, stuck) are
bounded: at most a quarter of the replicas (at least one) per REPLACE_WINDOW per
stack, so a storm of failures with one cause outside the members (a database they all
need) does not churn the whole fleet; past the bound the member stays, and an event
says so. Members on down hosts are not bounded (the minority rule guards them).

Replacements are created by the same planner as deploys (paas/rollout.py, the
current release as target), so the stack's group and quota hold as for any create.
Each action is in a savepoint: one refused (no host fits) is an event, retried on
the next pass. Every action says why in the stack's events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.db import hosts, instances, paas
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import DockyardError
from dockyard.model import TaskState, VmState
from dockyard.paas import rollout

MAX_RESTARTS = 2
REPLACE_WINDOW = timedelta(minutes=10)
REPLACE_SHARE = 4  # at most replicas / REPLACE_SHARE (at least 1) per window
HEALING = "self-healing"  # the request id (and user) of a replacement's actions
HOST_DOWN = "self-healing: host down"  # of a delete because the host is down (unbounded)
# tasks a member may be stuck in; migrating and snapshotting are an admin's or a
# schedule's, with their own deadlines
STUCK = {
    TaskState.scheduling.value,
    TaskState.spawning.value,
    TaskState.rebooting.value,
    TaskState.powering_on.value,
    TaskState.powering_off.value,
    TaskState.rebuilding.value,
}


@dataclass
class Budget:
    """Replacements left in the window, and what the event says when none are."""

    left: int
    done: int
    limit: int


def stack_ids(s: Session) -> list[str]:
    """Stacks with no running deploy: those a deploy does not own right now."""
    running = select(m.Deploy.stack_id).where(m.Deploy.status == "running")
    return list(s.scalars(select(m.Stack.id).where(m.Stack.id.not_in(running))))


def heal(s: Session, stack_id: str, now: datetime, weigh: float = 1.0) -> list[str]:
    """One pass over one stack; returns the hosts whose agents to wake."""
    stack = s.scalar(select(m.Stack).where(m.Stack.id == stack_id).with_for_update(of=m.Stack))
    if stack is None or paas.running(s, stack) is not None or stack.release_id is None:
        return []
    if _at_rest(s, stack):
        return []  # the common case, without the claim lock
    # something to mend: the members read again under the claim lock, so a user's task
    # begun meanwhile (a delete) is seen, not overwritten (PostgreSQL, read committed)
    hosts.lock_for_claim(s)
    s.expire_all()
    who = Principal(name=HEALING, role="member", project_id=stack.app.project_id)
    replace = _few_down(s)
    budget = _budget(s, stack, now)
    woke = [_mend(s, who, stack, r, now, replace, budget) for r in paas.members(s, stack)]
    release = s.get(m.Release, stack.release_id)
    assert release is not None
    strategy = rollout.Strategy.in_place
    b = rollout.budget(stack.replicas, stack.max_unavailable, stack.max_surge, strategy)
    plan = rollout.plan(paas.planned(paas.members(s, stack)), release.id, strategy, b)
    for _ in range(plan.create):
        create = lambda: _create(s, who, stack, release, weigh, now)  # noqa: E731
        woke.append(_try(s, stack, "create a replacement", create))
    return [h for h in woke if h]


def _at_rest(s: Session, stack: m.Stack) -> bool:
    """Nothing to mend: as many members as replicas, each ready on a host that is up,
    none with restarts to forget."""
    rows = paas.members(s, stack)
    if len(rows) != stack.replicas:
        return False
    for r in rows:
        inst = r.instance
        if r.heals or not paas.ready(instances.to_model(inst)):
            return False
        if inst.host is not None and not hosts.is_up(inst.host):
            return False
    return True


def _budget(s: Session, stack: m.Stack, now: datetime) -> Budget:
    """Replacements of the stack's members for their own failure within the window."""
    ids = select(m.StackMember.instance_id).where(m.StackMember.stack_id == stack.id)
    q = select(func.count()).where(
        m.InstanceAction.instance_id.in_(ids),
        m.InstanceAction.action == "delete",
        m.InstanceAction.request_id == HEALING,
        m.InstanceAction.start_time > now - REPLACE_WINDOW,
    )
    done = s.scalar(q) or 0
    limit = max(1, stack.replicas // REPLACE_SHARE)
    return Budget(left=limit - done, done=done, limit=limit)


def _create(
    s: Session, who: Principal, stack: m.Stack, release: m.Release, weigh: float, now: datetime
) -> str:
    host = paas.add_member(s, who, stack, release, HEALING, weigh, healed_at=now)
    paas.event(s, stack, f"a replacement of release {release.number} is being created on {host}")
    return host


def _few_down(s: Session) -> bool:
    """Whether the hosts that look down are a strict minority of all hosts."""
    rows = list(s.scalars(select(m.Host)))
    down = sum(1 for h in rows if not hosts.is_up(h))
    return down * 2 < len(rows)


def _mend(
    s: Session,
    who: Principal,
    stack: m.Stack,
    r: m.StackMember,
    now: datetime,
    replace: bool,
    budget: Budget,
) -> str | None:
    inst = r.instance
    if inst.task_state in (TaskState.deleting.value, TaskState.migrating.value):
        return None  # leaving already, or an admin moves it
    if inst.host is not None and not hosts.is_up(inst.host):
        if not replace:
            return None  # most hosts look down: wait for them (or an admin's evacuation)
        paas.event(s, stack, f"{inst.name}'s host {inst.host.name} is down: replaced elsewhere")
        return _try(s, stack, f"delete {inst.name}", lambda: _delete(s, who, inst.id, HOST_DOWN))
    if inst.task_state is not None:
        return _if_stuck(s, who, stack, r, now, budget)
    if inst.vm_state == VmState.error.value:
        fault = f" ({inst.fault})" if inst.fault else ""
        return _replace(s, who, stack, r, f"{inst.name} is in ERROR{fault}", budget, now)
    if paas.ready(instances.to_model(inst)):
        r.heals, r.healed_at = 0, None
        return None
    if inst.vm_state == VmState.stopped.value:
        what = f"{inst.name} was stopped (SHUTOFF)"
        return _retry(s, who, stack, r, now, budget, (what, f"{what}, and still is"), "start")
    health = inst.health or {}
    if health.get("status") != "unhealthy":
        return None
    detail = f" ({health['detail']})" if health.get("detail") else ""
    said = (f"{inst.name} unhealthy{detail}", f"{inst.name} still unhealthy{detail}")
    return _retry(s, who, stack, r, now, budget, said, "reboot")


def _retry(
    s: Session,
    who: Principal,
    stack: m.Stack,
    r: m.StackMember,
    now: datetime,
    budget: Budget,
    said: tuple[str, str],
    action: str,
) -> str | None:
    """``action`` (reboot, start) up to MAX_RESTARTS times, a progress deadline apart;
    then the member is replaced. ``said``: what is wrong, the first time and later."""
    if _recent(stack, r, now):
        return None  # give the last try its time
    what, still = said
    if r.heals >= MAX_RESTARTS:
        return _replace(s, who, stack, r, f"{still} after {r.heals} restarts", budget, now)
    r.healed_at = now
    r.heals += 1
    done = "restarted" if action == "reboot" else "started"
    paas.event(s, stack, f"{what}: {done} ({r.heals} of {MAX_RESTARTS})")
    iid = r.instance_id
    return _try(
        s,
        stack,
        f"{action} {r.instance.name}",
        lambda: instances.act(s, who, iid, action, HEALING)[1],
    )


def _if_stuck(
    s: Session, who: Principal, stack: m.Stack, r: m.StackMember, now: datetime, budget: Budget
) -> str | None:
    """Replace a member whose task has lasted longer than the progress deadline (from
    its open action's start, or healing's own last try, whichever is later)."""
    task = r.instance.task_state
    if task not in STUCK:
        return None
    q = select(func.max(m.InstanceAction.start_time)).where(
        m.InstanceAction.instance_id == r.instance_id, m.InstanceAction.finish_time.is_(None)
    )
    began = max(t for t in (s.scalar(q), r.healed_at, r.instance.created_at) if t is not None)
    deadline = stack.progress_deadline_s
    if now - began <= timedelta(seconds=deadline):
        return None
    why = f"{r.instance.name} stuck {task} for more than {deadline} s"
    return _replace(s, who, stack, r, why, budget, now)


def _replace(
    s: Session,
    who: Principal,
    stack: m.Stack,
    r: m.StackMember,
    why: str,
    budget: Budget,
    now: datetime,
) -> str | None:
    """Delete the member (the pass then creates its replacement), within the budget;
    past it, said once a progress deadline."""
    if budget.left <= 0:
        if _recent(stack, r, now):
            return None
        r.healed_at = now
        paas.event(
            s,
            stack,
            f"{why}: not replaced, {budget.done} of at most {budget.limit} replacements in "
            f"{REPLACE_WINDOW.seconds // 60} minutes done (a storm of failures does not churn "
            "the whole stack); replaced when the window allows",
            once=True,
        )
        return None
    budget.left -= 1
    budget.done += 1
    paas.event(s, stack, f"{why}: replaced")
    iid = r.instance_id
    return _try(s, stack, f"delete {r.instance.name}", lambda: _delete(s, who, iid, HEALING))


def _recent(stack: m.Stack, r: m.StackMember, now: datetime) -> bool:
    """The member was last tried (restarted, or its replacement held back) within the
    stack's progress deadline."""
    deadline = timedelta(seconds=stack.progress_deadline_s)
    return r.healed_at is not None and now - r.healed_at < deadline


def _delete(s: Session, who: Principal, iid: str, rid: str) -> str | None:
    return instances.act(s, who, iid, "delete", rid)[1]


def _try(s: Session, stack: m.Stack, what: str, act: Callable[[], str | None]) -> str | None:
    try:
        with s.begin_nested():
            return act()
    except DockyardError as exc:  # said once, not on every pass that retries it
        paas.event(s, stack, f"could not {what}: {exc.detail}", once=True)
        return None
