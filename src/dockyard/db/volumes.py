"""Named volumes: a project's fixed-size filesystems, each living on one host once attached.

A volume row has no host until an instance using it is first placed; the
claim then pins it to that host (``pin``), and every later instance using it
must go there (the scheduler's VolumeFilter). The instances using a volume
are the project's live instances whose ``volumes`` carry its id: there is no
attachment table to keep in step with instance deletes.

Deleting a volume deletes its row and bumps its host's generation: the host's
desired state stops listing it, and the agent removes its data once nothing
there uses it (level-triggered, like instances).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import hosts, lookup, quotas
from dockyard.db import models as m
from dockyard.db.identity import Principal
from dockyard.errors import Conflict, NotFound


def create(s: Session, who: Principal, req: model.VolumeCreate) -> model.Volume:
    """A new volume, counted against the project's ``volumes`` and ``volume_gb``
    quotas under the claim lock (so concurrent creates cannot both squeeze in)."""
    assert who.project_id is not None
    hosts.lock_for_claim(s)
    project = s.get(m.Project, who.project_id)
    needs = {"volumes": 1, "volume_gb": quotas.volume_gb_of(req.size_mb)}
    quotas.check(s, who.project_id, project.name if project else who.project_id, needs)
    if s.scalar(_named(who.project_id, req.name)) is not None:
        raise Conflict(
            f"a volume named {req.name!r} already exists in this project; choose another"
        )
    row = m.Volume(name=req.name, project_id=who.project_id, size_mb=req.size_mb)
    s.add(row)
    try:
        s.flush()
    except IntegrityError as exc:  # a concurrent create of the same name
        raise Conflict(f"a volume named {req.name!r} already exists in this project") from exc
    return to_model(s, row)


def get(s: Session, who: Principal, key: str) -> m.Volume:
    """By id or name; another project's volume is simply not found."""
    q = select(m.Volume).where((m.Volume.id == key) | (m.Volume.name == key))
    if not who.is_admin:
        q = q.where(m.Volume.project_id == who.project_id)
    return lookup.one(s.scalars(q).unique().all(), "volume", key, "dockyard volume list")


def show(s: Session, who: Principal, key: str) -> model.Volume:
    return to_model(s, get(s, who, key))


def list_volumes(s: Session, who: Principal) -> list[model.Volume]:
    q = select(m.Volume).order_by(m.Volume.created_at)
    if not who.is_admin:
        q = q.where(m.Volume.project_id == who.project_id)
    return [to_model(s, r) for r in s.scalars(q).unique()]


def delete(s: Session, who: Principal, key: str) -> str | None:
    """Refused while an instance uses it; its data goes when its host's agent sees it
    gone. Returns the host whose agent to wake."""
    row = get(s, who, key)
    hosts.lock_for_claim(s)  # hosts before volumes, in the order a claim takes them
    _lock(s, [row.id])
    users = using(s, row)
    if users:
        names = ", ".join(sorted(i.name for i in users))
        raise Conflict(
            f"volume {row.name!r} is attached to {names}; delete that instance first",
            instances=sorted(i.name for i in users),
        )
    host = row.host.name if row.host else None
    hosts.bump(s, row.host_id)
    s.delete(row)
    s.flush()
    return host


def using(s: Session, row: m.Volume) -> list[m.Instance]:
    """The live instances that mount ``row``."""
    q = select(m.Instance).where(
        m.Instance.project_id == row.project_id, m.Instance.deleted_at.is_(None)
    )
    return [
        i for i in s.scalars(q).unique() if any(v.get("volume_id") == row.id for v in i.volumes)
    ]


def resolve(
    s: Session, project_id: str, specs: Sequence[model.VolumeSpec]
) -> tuple[list[m.Volume], str | None]:
    """The named volumes of an instance about to be claimed, locked, and the host
    their data lives on (None if none has data yet). Two hosts: 409."""
    names = [spec.volume for spec in specs if spec.volume is not None]
    if not names:
        return [], None
    if s.get_bind().dialect.name == "postgresql":  # see _lock; before reading host_id
        s.execute(
            select(m.Volume.id)
            .where(m.Volume.project_id == project_id, m.Volume.name.in_(names))
            .with_for_update()
        )
    rows = []
    for name in names:
        row = s.scalar(_named(project_id, name))
        if row is None:
            raise NotFound(
                f"volume {name!r} does not exist in this project; create it with "
                f"`dockyard volume create {name} --size 1GB`"
            )
        rows.append(row)
    placed = {r.host.name: r.name for r in rows if r.host is not None}
    if len(placed) > 1:
        where = ", ".join(f"{vol} on {host}" for host, vol in sorted(placed.items()))
        raise Conflict(
            f"the volumes live on different hosts ({where}); one instance can only use "
            "volumes of one host"
        )
    return rows, next(iter(placed), None)


def attachments(specs: Sequence[model.VolumeSpec], rows: Sequence[m.Volume]) -> list[Any]:
    """What the instance row stores: each mount, named volumes with their id and size."""
    by_name = {r.name: r for r in rows}
    out = []
    for spec in specs:
        row = by_name.get(spec.volume) if spec.volume else None
        extra = {"volume_id": row.id, "size_mb": row.size_mb} if row else {}
        out.append({**spec.model_dump(exclude_none=True), **extra})
    return out


def pin(rows: Sequence[m.Volume], host_id: str) -> None:
    """First attach: the volumes' data will live on ``host_id`` from now on."""
    for row in rows:
        if row.host_id is None:
            row.host_id = host_id


def for_host(s: Session, host_id: str) -> list[model.HostVolume]:
    rows = s.scalars(select(m.Volume).where(m.Volume.host_id == host_id).order_by(m.Volume.id))
    return [model.HostVolume(id=r.id, size_mb=r.size_mb) for r in rows.unique()]


def to_model(s: Session, row: m.Volume) -> model.Volume:
    users = sorted(i.name for i in using(s, row))
    return model.Volume(
        id=row.id,
        name=row.name,
        project=row.project.name,
        size_mb=row.size_mb,
        host=row.host.name if row.host else None,
        status="in-use" if users else "available",
        attached_to=users,
        created_at=row.created_at,
    )


def _named(project_id: str, name: str) -> Any:
    return select(m.Volume).where(m.Volume.project_id == project_id, m.Volume.name == name)


def _lock(s: Session, ids: list[str]) -> None:
    """PostgreSQL: a delete and a claim of the same volume take turns (SQLite: the
    writing session already holds the database's write lock)."""
    if ids and s.get_bind().dialect.name == "postgresql":
        s.execute(select(m.Volume.id).where(m.Volume.id.in_(ids)).with_for_update())
