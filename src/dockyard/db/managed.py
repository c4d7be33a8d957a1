"""What a stack manages, and the changes refused outside it (409, naming the stack and
the `dockyard stack` command to use instead).

A stack's members and its server group are ordinary instances and an ordinary group,
reachable through /v1/instances and /v1/server-groups. The rule:

    refused    rebuild a member          its image and settings are its release's:
                                         `dockyard stack deploy`
               resize a member           its flavor is its release's: all members
                                         share it
               delete the stack's group  `dockyard stack delete`
               create an instance in it  `dockyard stack scale`
    allowed    delete, stop, reboot a member; snapshot, migrate, evacuate it:
               self-healing (db/healing.py) replaces a deleted member and starts
               a stopped one; the others keep its identity and release
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.db import groups, instances
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict


def refuse_member(s: Session, who: Principal, key: str, action: str) -> None:
    """409 when instance ``key`` is a stack's member (a ``rebuild`` or ``resize``)."""
    inst = instances.get(s, who, key)
    member = s.get(m.StackMember, inst.id)
    stack = s.get(m.Stack, member.stack_id) if member is not None else None
    if stack is None:
        return
    name = f"{stack.app.name}/{stack.name}"
    instead = {
        "rebuild": f"deploy a release to the whole stack: `dockyard stack deploy {name}`",
        "resize": "its members share their release's flavor; create a stack with another "
        "flavor and move to it",
    }[action]
    raise Conflict(f"{inst.name} is managed by stack {name}; {instead}", stack=name)


def refuse_group(s: Session, who: Principal, key: str | None, action: str) -> None:
    """409 when server group ``key`` is a stack's (a ``delete``, or a ``create`` of an
    instance in it)."""
    if key is None:
        return
    group = groups.get(s, who, key) if action == "delete" else _group(s, who, key)
    stack = (
        s.scalar(select(m.Stack).where(m.Stack.server_group_id == group.id)) if group else None
    )
    if group is None or stack is None:
        return
    name = f"{stack.app.name}/{stack.name}"
    instead = {
        "delete": f"`dockyard stack delete {name}` deletes it with the stack",
        "create": f"add members with `dockyard stack scale {name} --replicas N`",
    }[action]
    raise Conflict(f"server group {group.name} is managed by stack {name}; {instead}", stack=name)


def _group(s: Session, who: Principal, key: str) -> m.ServerGroup | None:
    """The caller's group by id or name, None when there is none (the create says so)."""
    q = select(m.ServerGroup).where(
        (m.ServerGroup.id == key) | (m.ServerGroup.name == key),
        m.ServerGroup.project_id == who.project_id,
    )
    return s.scalars(q).unique().first()
