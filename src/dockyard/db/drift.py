"""Consistency checks: keep what agents report, the declared baseline, and the checks.

The comparison itself is pure (monitor/drift.py); this module reads the rows it
needs and hands the API wire models.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import models as m
from dockyard.db.hosts import by_name, is_up
from dockyard.errors import BadRequest
from dockyard.monitor import drift


def record(s: Session, name: str, status: model.HostStatus) -> None:
    """Keep a heartbeat's baseline and instance drift (None: keep the last); rows are
    written only when something changed, so a quiet cluster's heartbeats stay cheap."""
    row = by_name(s, name)
    if status.baseline is not None:
        if row.baseline != status.baseline:
            row.baseline = dict(status.baseline)
        row.baseline_at = m.now()
    if status.instance_drift is not None:
        found = [d.model_dump(mode="json") for d in status.instance_drift]
        if row.instance_drift != found:
            row.instance_drift = found


def declared(s: Session) -> dict[str, str]:
    return {r.item: r.value for r in s.scalars(select(m.BaselineDeclared))}


def declare(s: Session, req: model.BaselineDeclare) -> list[model.BaselineItem]:
    """Set ``req.values`` and forget ``req.remove``; returns the cluster's baseline."""
    clash = sorted(set(req.values) & set(req.remove))
    if clash:
        raise BadRequest(f"{', '.join(clash)}: either set an item or remove it, not both")
    if req.remove:
        s.execute(delete(m.BaselineDeclared).where(m.BaselineDeclared.item.in_(req.remove)))
    for item, value in req.values.items():
        row = s.get(m.BaselineDeclared, item)
        if row is None:
            s.add(m.BaselineDeclared(item=item, value=value))
        else:
            row.value, row.updated_at = value, m.now()
    s.flush()
    return baseline(s)


def _hosts(s: Session) -> list[m.Host]:
    return list(s.scalars(select(m.Host).order_by(m.Host.name)))


def _expected(s: Session, rows: list[m.Host]) -> dict[str, drift.Expected]:
    """Up hosts' baselines make the majority; a down host's last word does not count."""
    up = {r.name: r.baseline for r in rows if r.baseline and is_up(r)}
    return drift.expected(up, declared(s))


def baseline(s: Session) -> list[model.BaselineItem]:
    """The cluster's expected value of every item, and where it came from."""
    want = _expected(s, _hosts(s))
    return [
        model.BaselineItem(item=item, value=e.value, source=e.source, hosts=e.hosts)
        for item, e in sorted(want.items())
    ]


def check(s: Session, name: str | None = None) -> list[model.HostCheck]:
    """The check of host ``name`` (NotFound if unknown), or of every host."""
    rows = _hosts(s)
    want = _expected(s, rows)
    if name is not None:
        wanted = by_name(s, name).id
        rows = [r for r in rows if r.id == wanted]
    return [_check(r, want) for r in rows]


def _check(row: m.Host, want: Mapping[str, drift.Expected]) -> model.HostCheck:
    found, undecided = drift.host_drift(row.baseline or {}, want) if row.baseline else ([], [])
    return model.HostCheck(
        host=row.name,
        availability_zone=row.availability_zone,
        state="up" if is_up(row) else "down",
        drift=found,
        undecided=undecided,
        instances=[model.InstanceDrift.model_validate(d) for d in row.instance_drift or []],
        reported_at=row.baseline_at,
    )


def instance_drift(s: Session, host_id: str | None, instance_id: str) -> list[model.Drift]:
    """What the instance's host last reported as its drift (for ``server show``)."""
    row = s.get(m.Host, host_id) if host_id else None
    for d in (row.instance_drift or []) if row is not None else []:
        if d.get("instance_id") == instance_id:
            return model.InstanceDrift.model_validate(d).items
    return []
