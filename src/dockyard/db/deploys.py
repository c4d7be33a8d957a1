"""Deploys: a new release rolled out, a rollback, and the controller's step.

    deploy / rollback (API)     a release row, a running Deploy, the stack's release
    advance (controller)        observe members -> paas/rollout.plan -> apply -> commit

``advance`` is level-triggered and idempotent: it reads the members afresh every
pass, so a pass lost to a crash or done twice by a restarted server plans the same
next step. It runs with the stack's row lock (PostgreSQL; SQLite's write lock), so
an API request on the same stack waits for it, and reads the members under the claim
lock (hosts.lock_for_claim), as every task's begin does, so a member's task begun by
a user meanwhile is seen, never overwritten; one server at a time runs passes
(the "deploys" lease, api/deploys.py). A deploy whose target members are not ready
within the stack's progress deadline (counted from its last progress) is rolled
back to the release it came from, and says why.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import hosts, instances, paas, rebuild
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict, DockyardError, NotFound
from dockyard.model import VmState
from dockyard.model import paas as wire
from dockyard.paas import rollout


def deploy(s: Session, who: Principal, app: str, name: str, req: wire.DeployCreate) -> wire.Deploy:
    """A new release from the current one with ``req``'s changes, rolled out."""
    stack = paas.get_stack(s, who, app, name, lock=True)
    paas.refuse_if_running(s, stack, "deploy")
    current = s.get(m.Release, stack.release_id)
    assert current is not None
    sent = req.model_fields_set
    spec = {
        "env": req.env if req.env is not None else current.env,
        "files": req.files if req.files is not None else current.files,
        "health_check": req.health_check if "health_check" in sent else current.health_check,
    }
    image = req.image or current.image_id or current.image_name
    new = paas.new_release(s, who, stack, image, current.flavor_id or current.flavor_name, spec)
    d = paas.begin(s, who, stack, "deploy", current.id, new)
    paas.event(s, stack, f"deploy of release {new.number} ({new.image_name}) by {who.name}")
    return paas.deploy_model(s, d)


def rollback(
    s: Session, who: Principal, app: str, name: str, req: wire.RollbackRequest
) -> wire.Deploy:
    """Deploy an earlier release again, as a new release (its history stays whole)."""
    stack = paas.get_stack(s, who, app, name, lock=True)
    paas.refuse_if_running(s, stack, "rollback")
    current = s.get(m.Release, stack.release_id)
    assert current is not None
    old = _earlier(s, stack, current, req.to)
    spec = {"env": old.env, "files": old.files, "health_check": old.health_check}
    if old.image_id is None or old.flavor_id is None:
        image, flavor = f"image {old.image_name!r}", f"flavor {old.flavor_name!r}"
        gone = image if old.image_id is None else flavor
        raise Conflict(
            f"release {old.number}'s {gone} was deleted, so it cannot run again; roll back to "
            "another release, or deploy with --image"
        )
    new = paas.new_release(s, who, stack, old.image_id, old.flavor_id, spec)
    d = paas.begin(s, who, stack, "rollback", current.id, new)
    paas.event(
        s, stack, f"rollback to release {old.number} (as release {new.number}) by {who.name}"
    )
    return paas.deploy_model(s, d)


def _earlier(s: Session, stack: m.Stack, current: m.Release, to: int | None) -> m.Release:
    q = select(m.Release).where(m.Release.stack_id == stack.id)
    if to is not None:
        row = s.scalar(q.where(m.Release.number == to))
        if row is None:
            raise NotFound(
                f"{stack.app.name}/{stack.name} has no release {to}; see "
                f"`dockyard release list {stack.app.name}/{stack.name}`"
            )
        return row
    q = q.where(m.Release.number < current.number, m.Release.id.in_(_ran()))
    row = s.scalar(q.order_by(m.Release.number.desc()).limit(1))
    if row is None:
        raise Conflict(f"{stack.app.name}/{stack.name} has no earlier release that ran; give --to")
    return row


def _ran() -> Select[Any]:
    """The releases that ran: a deploy to them succeeded once (whatever their result
    says now -- a release whose later re-deploy failed still ran)."""
    return select(m.Deploy.to_release_id).where(m.Deploy.status == "succeeded")


def get(s: Session, who: Principal, app: str, name: str, deploy_id: str) -> wire.Deploy:
    stack = paas.get_stack(s, who, app, name)
    row = s.get(m.Deploy, deploy_id)
    if row is None or row.stack_id != stack.id:
        raise NotFound(f"{app}/{name} has no deploy {deploy_id!r}")
    return paas.deploy_model(s, row)


def running_ids(s: Session) -> list[str]:
    """Every running deploy, oldest first: the controller's work list."""
    q = select(m.Deploy.id).where(m.Deploy.status == "running").order_by(m.Deploy.created_at)
    return list(s.scalars(q))


def advance(s: Session, deploy_id: str, now: datetime, weigh: float = 1.0) -> list[str]:
    """One step of a running deploy; returns the hosts whose agents to wake."""
    d = s.get(m.Deploy, deploy_id)
    if d is None or d.status != "running":
        return []
    stack = s.scalar(select(m.Stack).where(m.Stack.id == d.stack_id).with_for_update(of=m.Stack))
    if stack is None:
        return []
    s.refresh(d)  # as it is now that we hold the stack
    if d.status != "running":
        return []
    # before the members are read: a user's delete (or any task) begun meanwhile is
    # seen, not overwritten by an action planned on what was read before it (PostgreSQL)
    hosts.lock_for_claim(s)
    target = s.get(m.Release, d.to_release_id)
    assert target is not None
    rows = paas.members(s, stack)
    seen = paas.planned(rows)
    ready_now = sum(x.ready for x in seen if x.release == target.id)
    if ready_now > d.ready_seen:
        d.progress_at, d.ready_seen = now, ready_now
    overdue = now - d.progress_at > timedelta(seconds=stack.progress_deadline_s)
    strategy = rollout.Strategy(stack.strategy)
    b = rollout.budget(stack.replicas, stack.max_unavailable, stack.max_surge, strategy)
    plan = rollout.plan(seen, target.id, strategy, b, overdue)
    if plan.done:
        _finish(s, stack, d, target, now)
        return []
    if plan.rollback:
        return _give_up(s, stack, d, target, rows, now)
    woke, acted = _apply(s, _acting(stack, d), stack, target, plan, weigh)
    if acted:  # refused actions are no progress: repeated to the deadline, they roll back
        d.progress_at = now
    return woke


def _acting(stack: m.Stack, d: m.Deploy) -> Principal:
    """The controller acts as the deploy's author, within the stack's project."""
    return Principal(
        name=d.created_by, role="member", project_id=stack.app.project_id, user_id=d.user_id
    )


def _apply(
    s: Session, who: Principal, stack: m.Stack, target: m.Release, plan: rollout.Plan, weigh: float
) -> tuple[list[str], int]:
    """Each action in a savepoint: one refused (a task begun meanwhile) is an event,
    and the next pass plans again. Returns the hosts to wake and how many were done."""
    hosts: list[str | None] = []
    acted = 0
    rid = f"deploy-{stack.id[:8]}"
    spec = model.InstanceRebuild(
        image=target.image_id,
        env=target.env,
        files=[model.ConfigFile.model_validate(f) for f in target.files],
        health_check=paas.check_of(target),
    )
    actions = [("rebuild", i) for i in plan.rebuild] + [("delete", i) for i in plan.delete]
    actions += [("create", "")] * plan.create
    for verb, iid in actions:
        try:
            with s.begin_nested():
                hosts.append(_act(s, who, stack, target, verb, iid, spec, rid, weigh))
            acted += 1
        except DockyardError as exc:
            note = f"could not {verb} {iid or 'an instance'}: {exc.detail}"
            paas.event(s, stack, note, once=True)  # said once, not on every retrying pass
    return [h for h in hosts if h], acted


def _act(
    s: Session,
    who: Principal,
    stack: m.Stack,
    target: m.Release,
    verb: str,
    iid: str,
    spec: model.InstanceRebuild,
    rid: str,
    weigh: float,
) -> str | None:
    if verb == "create":
        return paas.add_member(s, who, stack, target, rid, weigh)
    member = s.get(m.StackMember, iid)
    assert member is not None
    if verb == "rebuild" and member.instance.vm_state == VmState.error.value:
        # an instance in ERROR cannot be rebuilt: replaced (the next pass creates one)
        paas.event(s, stack, f"{member.instance.name} is in ERROR: replaced, not rebuilt")
        verb = "delete"
    if verb == "delete":
        return instances.act(s, who, iid, "delete", rid)[1]
    _, host = rebuild.rebuild(s, who, iid, spec, rid)
    member.from_release_id, member.release_id = member.release_id, target.id
    return host


def _finish(s: Session, stack: m.Stack, d: m.Deploy, target: m.Release, now: datetime) -> None:
    d.status, d.running_stack_id, d.finished_at = "succeeded", None, now
    q = select(m.Release).where(
        m.Release.stack_id == stack.id, m.Release.result == "deployed", m.Release.id != target.id
    )
    for old in s.scalars(q):
        old.result = "superseded"
    target.result = "deployed"
    paas.event(s, stack, f"release {target.number} is deployed: {stack.replicas} ready")


def _give_up(
    s: Session,
    stack: m.Stack,
    d: m.Deploy,
    target: m.Release,
    rows: list[m.StackMember],
    now: datetime,
) -> list[str]:
    """Past the deadline: roll back to where the deploy came from, saying why; its
    release's result is then "rolled-back". With nothing that ran to go back to (a
    first release; a deploy from one that never ran) or when the rollback fails
    itself, the deploy ends as failed, and so does its release's result."""
    why = _why(stack, target, rows)
    d.reason, d.running_stack_id, d.finished_at = why, None, now
    back = s.get(m.Release, d.from_release_id) if d.from_release_id else None
    if back is not None and s.scalar(select(m.Release.id).where(
        m.Release.id == back.id, m.Release.id.in_(_ran())
    )) is None:  # fmt: skip
        why = f"{why}; release {back.number} never ran, so there is nothing to roll back to"
        d.reason, back = why[:1024], None
    if back is None or d.kind == "auto-rollback":
        d.status, target.result = "failed", "failed"
        paas.event(s, stack, f"deploy of release {target.number} failed: {why}")
        return []
    d.status, target.result = "rolled-back", "rolled-back"
    s.flush()  # the running key is free again
    who = _acting(stack, d)
    again = paas.begin(s, who, stack, "auto-rollback", target.id, back, now)
    again.created_by = "controller"
    paas.event(
        s, stack, f"deploy of release {target.number} rolled back to release {back.number}: {why}"
    )
    return advance(s, again.id, now)


def _why(stack: m.Stack, target: m.Release, rows: list[m.StackMember]) -> str:
    late = []
    for r in rows:
        inst = instances.to_model(r.instance)
        if r.release_id == target.id and not paas.ready(inst):
            state = inst.health.status if inst.health else (inst.task_state or inst.power_state)
            detail = f" ({inst.health.detail})" if inst.health and inst.health.detail else ""
            late.append(f"{inst.name} {state}{detail}")
    what = "; ".join(late[:5]) or "no instance of it became ready"
    return (
        f"release {target.number} was not ready within {stack.progress_deadline_s} s "
        f"(progress deadline): {what}"
    )[:1024]
