"""Per-project quotas: checked inside the claim transaction, so concurrent
creates cannot both squeeze under a limit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import models as m
from dockyard.db.identity import Principal, project_by_name
from dockyard.errors import Forbidden, NotFound


def usage(s: Session, project_id: str) -> dict[str, int]:
    live = (m.Instance.project_id == project_id, m.Instance.deleted_at.is_(None))
    # one statement for the instances' figures: it runs in every claim, under the lock
    count, vcpus, memory, dedicated, ips = s.execute(
        select(
            func.count(),
            func.sum(m.Instance.vcpus),
            func.sum(m.Instance.memory_mb),
            func.sum(m.Instance.vcpus).filter(m.Instance.dedicated.is_(True)),
            func.count(m.Instance.ip),  # counts the addresses that are not NULL
        ).where(*live)
    ).one()
    volumes, volume_gb = s.execute(
        select(func.count(), func.sum(volume_gb_of(m.Volume.size_mb))).where(
            m.Volume.project_id == project_id
        )
    ).one()
    return {
        "instances": int(count or 0),
        "vcpus": int(vcpus or 0),
        "memory_mb": int(memory or 0),
        "dedicated_cores": int(dedicated or 0),
        "ips": int(ips or 0),
        "volumes": int(volumes or 0),
        "volume_gb": int(volume_gb or 0),
        "snapshots": snapshot_count(s, project_id),
    }


def snapshot_count(s: Session, project_id: str) -> int:
    """The project's snapshot images (queued, active or failed), migration images aside
    (a migration's image has the migration's id)."""
    by_migration = select(m.Migration.id).where(m.Migration.id == m.Image.id).exists()
    q = select(func.count()).where(
        m.Image.project_id == project_id, m.Image.snapshot_of.is_not(None), ~by_migration
    )
    return int(s.scalar(q) or 0)


def volume_gb_of(size_mb: Any) -> Any:
    """What a volume counts against quotas and its host's disk: its size in GiB,
    rounded up (works on a column in SQL and on an int)."""
    return (size_mb + 1023) // 1024


def limits(s: Session, project_id: str) -> model.Quota:
    row = s.get(m.Quota, project_id)
    if row is None:
        return model.Quota()
    return model.Quota(**{r: getattr(row, r) for r in model.QUOTA_RESOURCES})


_HINTS = {
    "snapshots": "delete snapshots you no longer need (`dockyard image list`, "
    "`dockyard image delete NAME`) or ",
}


def check(s: Session, project_id: str, project: str, needs: dict[str, int]) -> None:
    """Raise Forbidden naming the first quota that ``needs`` would exceed."""
    quota = limits(s, project_id)
    limited = {r: n for r, n in needs.items() if n > 0 and getattr(quota, r) is not None}
    if not limited:
        return  # nothing this request adds is limited: no usage to count (every claim runs this)
    used = usage(s, project_id)
    for resource, extra in limited.items():
        limit = getattr(quota, resource)
        if used[resource] + extra > limit:
            raise Forbidden(
                f"quota exceeded for project {project}: {resource} limit {limit}, in use "
                f"{used[resource]}, this request needs {extra} more; {_HINTS.get(resource, '')}"
                "ask an admin to raise it "
                f"(`dockyard quota set {project} --{resource.replace('_', '-')} N`)",
                quota=resource,
                limit=limit,
                used=used[resource],
            )


def show(s: Session, who: Principal, project: str | None) -> model.ProjectQuota:
    if project is None:
        if who.project_id is None:
            raise NotFound("agents have no project")
        row = s.get(m.Project, who.project_id)
        assert row is not None
    else:
        row = project_by_name(s, project)
        if not who.is_admin and row.id != who.project_id:
            raise NotFound(f"project {project!r} does not exist; see `dockyard project list`")
    quota, used = limits(s, row.id), usage(s, row.id)
    return model.ProjectQuota(
        project=row.name,
        resources={
            r: model.QuotaUsage(limit=getattr(quota, r), used=used[r])
            for r in model.QUOTA_RESOURCES
        },
    )


def update(s: Session, project: str, changes: dict[str, int | None]) -> None:
    row = project_by_name(s, project)
    quota = s.get(m.Quota, row.id)
    if quota is None:
        quota = m.Quota(project_id=row.id)
        s.add(quota)
    for resource, value in changes.items():
        setattr(quota, resource, value)
    s.flush()
