"""An admin's way out of a stuck instance: reset its state (``server reset-state``).

A task waits for its host's agent to report. When that will never come (the host
died for good, the agent lost its record), an admin clears the task and sets the
vm_state the instance is really in. The action log says who did it and what was
abandoned, so the console's history stays true.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import hosts, instances
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict
from dockyard.model import VmState


def reset_state(
    s: Session, who: Principal, key: str, vm_state: VmState, request_id: str
) -> tuple[model.Instance, str | None]:
    """Clear task_state and set ``vm_state`` (active or error); open actions end as
    errors. Returns the instance and the host whose agent to wake."""
    inst = instances.get(s, who, key)
    if vm_state == VmState.active and inst.host_id is None:
        raise Conflict(
            f"{inst.name} has no host, so it cannot be active; reset it to error, or delete it"
        )
    before = f"vm_state {inst.vm_state}, task_state {inst.task_state or '-'}"
    abandoned = _abandon_open_actions(s, inst.id, who.name)
    inst.vm_state, inst.task_state, inst.old_flavor = vm_state.value, None, None
    inst.fault = f"reset to error by {who.name}" if vm_state == VmState.error else None
    note = f"{before} -> vm_state {vm_state.value}"
    if abandoned:
        note += f"; abandoned: {', '.join(abandoned)}"
    s.add(
        m.InstanceAction(
            instance_id=inst.id,
            request_id=request_id,
            action="reset-state",
            user_name=who.name,
            finish_time=m.now(),
            result="success",
            message=note[:1024],
        )
    )
    hosts.bump(s, inst.host_id)  # the agent's copy still carries the cleared task
    s.flush()
    return instances.to_model(inst), inst.host.name if inst.host else None


def _abandon_open_actions(s: Session, instance_id: str, admin: str) -> list[str]:
    rows = s.scalars(
        select(m.InstanceAction).where(
            m.InstanceAction.instance_id == instance_id,
            m.InstanceAction.finish_time.is_(None),
        )
    ).all()
    for row in rows:
        row.finish_time, row.result = m.now(), "error"
        why = f"abandoned by {admin}'s reset-state"
        row.message = (f"{row.message}: {why}" if row.message else why)[:1024]
    return [row.action for row in rows]
