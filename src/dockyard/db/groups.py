"""Server groups: a project's placement policies, and their members where they run.

A group's members are the project's live instances whose ``server_group_id``
names it. A claim reads where they run (``spec``) after it has taken the claim
lock (``hosts.lock_for_claim``), so two concurrent claims into one anti-affinity
group cannot both see a host as free of members; a group delete takes the same
lock, so it never removes a group a claim is joining.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import hosts, lookup
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict, NotFound
from dockyard.scheduler.state import GroupSpec


def create(s: Session, who: Principal, req: model.ServerGroupCreate) -> model.ServerGroup:
    """A new, empty group in the caller's project."""
    assert who.project_id is not None
    if _exists(s, who.project_id, req.name):
        raise Conflict(_taken(req.name))
    row = m.ServerGroup(name=req.name, project_id=who.project_id, policy=req.policy.value)
    s.add(row)
    try:
        s.flush()
    except IntegrityError as exc:  # a concurrent create of the same name
        raise Conflict(_taken(req.name)) from exc
    return to_model(s, row)


def get(s: Session, who: Principal, key: str) -> m.ServerGroup:
    """By id or name; another project's group is simply not found (admins see all)."""
    q = select(m.ServerGroup).where((m.ServerGroup.id == key) | (m.ServerGroup.name == key))
    if not who.is_admin:
        q = q.where(m.ServerGroup.project_id == who.project_id)
    return lookup.one(s.scalars(q).unique().all(), "server group", key, _LISTING)


def show(s: Session, who: Principal, key: str) -> model.ServerGroup:
    return to_model(s, get(s, who, key))


def list_groups(s: Session, who: Principal) -> list[model.ServerGroup]:
    q = select(m.ServerGroup).order_by(m.ServerGroup.created_at, m.ServerGroup.name)
    if not who.is_admin:
        q = q.where(m.ServerGroup.project_id == who.project_id)
    return [to_model(s, r) for r in s.scalars(q).unique()]


def delete(s: Session, who: Principal, key: str) -> None:
    """Refused (409, naming them) while the group has live members."""
    row = get(s, who, key)
    hosts.lock_for_claim(s)  # a claim joining this group holds it too: take turns
    names = sorted(i.name for i in _members(s, row.id))
    if names:
        raise Conflict(
            f"server group {row.name!r} still has members ({', '.join(names)}); delete them first",
            members=names,
        )
    # deleted instances keep their history, not the group
    s.execute(
        update(m.Instance).where(m.Instance.server_group_id == row.id).values(server_group_id=None)
    )
    s.delete(row)
    s.flush()


def for_claim(s: Session, project_id: str, key: str) -> tuple[m.ServerGroup, GroupSpec]:
    """The group an instance of ``project_id`` joins, and where its members run now.
    Call it under the claim lock. Only the project's own groups can be joined."""
    q = select(m.ServerGroup).where(
        m.ServerGroup.project_id == project_id,
        (m.ServerGroup.id == key) | (m.ServerGroup.name == key),
    )
    rows = s.scalars(q).unique().all()
    if not rows:
        raise NotFound(
            f"server group {key!r} does not exist in this project; create it with "
            f"`dockyard server-group create {key} --policy anti-affinity`"
        )
    row = lookup.one(rows, "server group", key, _LISTING)
    counts = s.execute(
        select(m.Host.name, func.count(m.Instance.id))
        .join(m.Host, m.Instance.host_id == m.Host.id)
        .where(m.Instance.server_group_id == row.id, m.Instance.deleted_at.is_(None))
        .group_by(m.Host.name)
    )
    members = {str(name): int(n) for name, n in counts}
    return row, GroupSpec(name=row.name, policy=row.policy, members=members)


def _members(s: Session, group_id: str) -> list[m.Instance]:
    q = select(m.Instance).where(
        m.Instance.server_group_id == group_id, m.Instance.deleted_at.is_(None)
    )
    return list(s.scalars(q.order_by(m.Instance.created_at)).unique())


def to_model(s: Session, row: m.ServerGroup) -> model.ServerGroup:
    members = _members(s, row.id)
    where: dict[str, list[str]] = defaultdict(list)
    for inst in members:
        if inst.host is not None:
            where[inst.host.name].append(inst.name)
    return model.ServerGroup(
        id=row.id,
        name=row.name,
        project=row.project.name,
        policy=model.GroupPolicy(row.policy),
        members=[i.name for i in members],
        hosts=dict(sorted(where.items())),
        created_at=row.created_at,
    )


_LISTING = "dockyard server-group list"


def _exists(s: Session, project_id: str, name: str) -> bool:
    q = select(m.ServerGroup.id).where(
        m.ServerGroup.project_id == project_id, m.ServerGroup.name == name
    )
    return s.scalar(q) is not None


def _taken(name: str) -> str:
    return f"a server group named {name!r} already exists in this project; choose another"
