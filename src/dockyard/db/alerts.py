"""Alert receivers and routes: stored here, rendered into Alertmanager's configuration
by monitor/receivers.py, and read by the adapter (api/alerts.py).

Secrets (URLs of robots and gateways, the SMTP password, the adapter token) are
kept in the ``config`` column because Alertmanager's configuration needs them in
clear; the API hands out ``model.alerts.Receiver``, which holds none of them.
"""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.db import models as m
from dockyard.errors import Conflict, NotFound
from dockyard.model.alerts import (
    ADAPTED,
    Receiver,
    ReceiverCreate,
    ReceiverKind,
    ReceiverSpec,
    Route,
    RouteCreate,
    redact,
)

_CONFIG_SKIP = {"name", "kind"}


def add_receiver(s: Session, req: ReceiverCreate) -> Receiver:
    if s.scalar(select(m.AlertReceiver.id).where(m.AlertReceiver.name == req.name)):
        raise Conflict(_taken(req.name))
    config = req.model_dump(exclude=_CONFIG_SKIP, exclude_none=True)
    row = m.AlertReceiver(
        name=req.name, kind=req.kind.value, config=config, adapter_token=secrets.token_urlsafe(32)
    )
    s.add(row)
    try:
        s.flush()
    except IntegrityError as exc:  # a concurrent add of the same name
        raise Conflict(_taken(req.name)) from exc
    return to_receiver(row)


def _row(s: Session, name: str) -> m.AlertReceiver:
    row = s.scalar(select(m.AlertReceiver).where(m.AlertReceiver.name == name))
    if row is None:
        raise NotFound(f"no alert receiver {name!r}; see `dockyard alert receiver list`")
    return row


def receivers(s: Session) -> list[Receiver]:
    rows = s.scalars(select(m.AlertReceiver).order_by(m.AlertReceiver.name))
    return [to_receiver(r) for r in rows]


def spec(s: Session, name: str) -> ReceiverSpec:
    """One receiver with its secrets, for a test message or the adapter."""
    return _spec(_row(s, name))


def specs(s: Session) -> list[ReceiverSpec]:
    rows = s.scalars(select(m.AlertReceiver).order_by(m.AlertReceiver.name))
    return [_spec(r) for r in rows]


def delete_receiver(s: Session, name: str) -> None:
    """Refused (409) while a route sends to it."""
    row = _row(s, name)
    used = s.scalars(select(m.AlertRoute.id).where(m.AlertRoute.receiver_id == row.id)).all()
    if used:
        raise Conflict(
            f"routes {', '.join(used)} send to {name!r}; delete them first "
            "(`dockyard alert route delete ID`)",
            routes=list(used),
        )
    s.delete(row)
    s.flush()


def add_route(s: Session, req: RouteCreate) -> Route:
    receiver = _row(s, req.receiver)
    position = req.position
    if position is None:  # last
        top = s.scalar(select(func.max(m.AlertRoute.position)))
        position = 0 if top is None else top + 1
    row = m.AlertRoute(
        receiver_id=receiver.id,
        severity=req.severity,
        project=req.project,
        position=position,
        continue_matching=req.continue_matching,
    )
    s.add(row)
    s.flush()
    return to_route(row)


def routes(s: Session) -> list[Route]:
    q = select(m.AlertRoute).order_by(m.AlertRoute.position, m.AlertRoute.created_at)
    return [to_route(r) for r in s.scalars(q).unique()]


def delete_route(s: Session, route_id: str) -> None:
    row = s.get(m.AlertRoute, route_id)
    if row is None:
        raise NotFound(f"no alert route {route_id!r}; see `dockyard alert route list`")
    s.delete(row)
    s.flush()


def to_receiver(row: m.AlertReceiver) -> Receiver:
    kind, c = ReceiverKind(row.kind), row.config
    target = (
        c["email_to"] if kind == ReceiverKind.email else redact(c.get("url") or c["sms_template"])
    )
    return Receiver(
        id=row.id,
        name=row.name,
        kind=kind,
        target=target,
        smtp_smarthost=c.get("smtp_smarthost"),
        smtp_from=c.get("smtp_from"),
        smtp_auth_user=c.get("smtp_auth_user"),
        via_adapter=kind in ADAPTED,
        created_at=row.created_at,
    )


def _spec(row: m.AlertReceiver) -> ReceiverSpec:
    return ReceiverSpec(
        name=row.name, kind=ReceiverKind(row.kind), adapter_token=row.adapter_token, **row.config
    )


def to_route(row: m.AlertRoute) -> Route:
    return Route(
        id=row.id,
        receiver=row.receiver.name,
        severity=row.severity,
        project=row.project,
        position=row.position,
        continue_matching=row.continue_matching,
        created_at=row.created_at,
    )


def _taken(name: str) -> str:
    return f"an alert receiver named {name!r} already exists; choose another or delete it first"


def project_name(s: Session, project_id: str | None) -> str | None:
    """The name alerts carry in their ``project`` label."""
    row = s.get(m.Project, project_id) if project_id else None
    return row.name if row else None
