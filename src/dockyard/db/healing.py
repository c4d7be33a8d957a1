"""Self-healing of stacks at rest (no deploy running), a pass of the deploy controller.

    unhealthy member     restarted (reboot); still unhealthy a progress deadline
                         later: restarted again; after MAX_RESTARTS: replaced
    member on a down host  deleted (carried out when the host returns) and replaced
                         elsewhere, without waiting for an admin -- only while the
                         down hosts are a minority of the cloud's: when most look down
                         at once (this server just restarted, or is cut off from them)
                         the fault is more likely here than there, and nothing is deleted
    fewer members than replicas (one deleted by hand, one replaced): created

Replacements are created by the same planner as deploys (paas/rollout.py, the
current release as target), so the stack's group and quota hold as for any create.
Each action is in a savepoint: one refused (no host fits) is an event, retried on
the next pass. Every action says why in the stack's events.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.db import hosts, instances, paas
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import DockyardError
from dockyard.paas import rollout

MAX_RESTARTS = 2


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
    who = Principal(name="self-healing", role="member", project_id=stack.app.project_id)
    replace = _few_down(s)
    woke = [_mend(s, who, stack, r, now, replace) for r in paas.members(s, stack)]
    release = s.get(m.Release, stack.release_id)
    assert release is not None
    strategy = rollout.Strategy.in_place
    b = rollout.budget(stack.replicas, stack.max_unavailable, stack.max_surge, strategy)
    plan = rollout.plan(paas.planned(paas.members(s, stack)), release.id, strategy, b)
    for _ in range(plan.create):
        woke.append(
            _try(s, stack, "create a replacement", lambda: _create(s, who, stack, release, weigh))
        )
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


def _create(s: Session, who: Principal, stack: m.Stack, release: m.Release, weigh: float) -> str:
    host = paas.add_member(s, who, stack, release, "self-healing", weigh)
    paas.event(s, stack, f"a replacement of release {release.number} is being created on {host}")
    return host


def _few_down(s: Session) -> bool:
    """Whether the hosts that look down are a strict minority of all hosts."""
    rows = list(s.scalars(select(m.Host)))
    down = sum(1 for h in rows if not hosts.is_up(h))
    return down * 2 < len(rows)


def _mend(
    s: Session, who: Principal, stack: m.Stack, r: m.StackMember, now: datetime, replace: bool
) -> str | None:
    inst = r.instance
    if inst.task_state is not None:
        return None
    if inst.host is not None and not hosts.is_up(inst.host):
        if not replace:
            return None  # most hosts look down: wait for them (or an admin's evacuation)
        paas.event(s, stack, f"{inst.name}'s host {inst.host.name} is down: replaced elsewhere")
        return _try(s, stack, f"delete {inst.name}", lambda: _delete(s, who, inst.id))
    health = inst.health or {}
    if health.get("status") == "healthy":
        r.heals, r.healed_at = 0, None
        return None
    if health.get("status") != "unhealthy":
        return None
    if r.healed_at and now - r.healed_at < timedelta(seconds=stack.progress_deadline_s):
        return None  # give the last restart its time
    detail = f" ({health['detail']})" if health.get("detail") else ""
    r.healed_at = now
    if r.heals >= MAX_RESTARTS:
        paas.event(
            s, stack, f"{inst.name} still unhealthy{detail} after {r.heals} restarts: replaced"
        )
        return _try(s, stack, f"delete {inst.name}", lambda: _delete(s, who, inst.id))
    r.heals += 1
    paas.event(s, stack, f"{inst.name} unhealthy{detail}: restarted ({r.heals} of {MAX_RESTARTS})")
    return _try(
        s,
        stack,
        f"restart {inst.name}",
        lambda: instances.act(s, who, inst.id, "reboot", "self-healing")[1],
    )


def _delete(s: Session, who: Principal, iid: str) -> str | None:
    return instances.act(s, who, iid, "delete", "self-healing")[1]


def _try(s: Session, stack: m.Stack, what: str, act: Callable[[], str | None]) -> str | None:
    try:
        with s.begin_nested():
            return act()
    except DockyardError as exc:  # said once, not on every pass that retries it
        paas.event(s, stack, f"could not {what}: {exc.detail}", once=True)
        return None
