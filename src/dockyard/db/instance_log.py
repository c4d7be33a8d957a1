"""An instance's action log (nova's instance actions): who asked what, when, and how
it ended. Every module that acts on an instance writes here."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.db import models as m


def log(
    s: Session, instance_id: str, request_id: str, action: str, user: str, note: str | None = None
) -> None:
    """Open an action (``close`` ends the newest open one of that name)."""
    s.add(
        m.InstanceAction(
            instance_id=instance_id,
            request_id=request_id,
            action=action,
            user_name=user,
            message=note,
        )
    )


def close(s: Session, instance_id: str, action: str, error: str | None) -> None:
    """End the newest open ``action``: success, or error with the reason appended."""
    row = s.scalar(
        select(m.InstanceAction)
        .where(
            m.InstanceAction.instance_id == instance_id,
            m.InstanceAction.action == action,
            m.InstanceAction.finish_time.is_(None),
        )
        .order_by(m.InstanceAction.start_time.desc())
        .limit(1)
    )
    if row is not None:
        row.finish_time = m.now()
        row.result = "error" if error else "success"
        if error:
            row.message = f"{row.message}: {error}" if row.message else error
