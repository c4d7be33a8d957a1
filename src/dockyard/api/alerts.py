"""Alert receivers and routes (admins), test messages, and the adapter Alertmanager
posts to for the targets it cannot reach itself.

    Alertmanager ── POST /v1/alerts/adapter/{receiver} (Bearer: the receiver's token)
        └─ monitor/adapter.outgoing ─► api/delivery.deliver (3 tries) ─► robot / gateway
           200 when delivered; 502 when not, and Alertmanager retries later

Receivers' secrets go in and never come out: listings show a URL's scheme and
host only. Adding or deleting a receiver or route changes what
monitor/receivers.render returns; ``create_app(alerts_changed=...)`` is called after
each such change has committed, so whoever runs Alertmanager re-renders and reloads.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from dockyard.api import delivery
from dockyard.api.deps import Admin, Db, Key
from dockyard.db import alerts
from dockyard.db.session import Database
from dockyard.errors import Conflict, NotFound, Unauthorized
from dockyard.model.alerts import (
    ADAPTED,
    Receiver,
    ReceiverCreate,
    ReceiverKind,
    ReceiverSpec,
    Route,
    RouteCreate,
)
from dockyard.monitor import adapter

router = APIRouter(tags=["alerts"])
RouteId = Annotated[str, Path(min_length=1, max_length=36, pattern=r"^[0-9a-f-]+$")]


@router.post("/alerts/receivers", status_code=201)
def add_receiver(body: ReceiverCreate, request: Request, db: Db, who: Admin) -> Receiver:
    """A place alerts can go; a route sends them there (POST /alerts/routes)."""
    with db.session() as s:
        made = alerts.add_receiver(s, body)
    _changed(request)
    return made


@router.get("/alerts/receivers")
def list_receivers(db: Db, who: Admin) -> list[Receiver]:
    with db.session(write=False) as s:
        return alerts.receivers(s)


@router.delete("/alerts/receivers/{key}", status_code=204)
def delete_receiver(key: Key, request: Request, db: Db, who: Admin) -> Response:
    """Refused (409, naming them) while routes send to it."""
    with db.session() as s:
        alerts.delete_receiver(s, key)
    _changed(request)
    return Response(status_code=204)


_FAILED: dict[int | str, dict[str, Any]] = {
    502: {"description": "the target refused the message or could not be reached"}
}


@router.post("/alerts/receivers/{key}/test", responses=_FAILED)
async def test_receiver(key: Key, db: Db, who: Admin) -> dict[str, str]:
    """Send a test message straight to the receiver's target (not through
    Alertmanager); 502 with the target's answer when it fails."""
    spec = await run_in_threadpool(_spec, db, key)
    payload = adapter.sample_payload(spec.name, who.name)
    if spec.kind == ReceiverKind.email:
        subject, text = adapter.headline(payload), adapter.plain(payload)
        await run_in_threadpool(delivery.send_email, spec, subject, text)
    else:
        await delivery.deliver(adapter.outgoing(spec, payload))
    return {"receiver": spec.name, "status": "sent"}


@router.post("/alerts/routes", status_code=201)
def add_route(body: RouteCreate, request: Request, db: Db, who: Admin) -> Route:
    """Alerts matching severity and project (both optional) go to the receiver;
    routes are tried in position order, the first match wins unless it continues."""
    with db.session() as s:
        made = alerts.add_route(s, body)
    _changed(request)
    return made


@router.get("/alerts/routes")
def list_routes(db: Db, who: Admin) -> list[Route]:
    with db.session(write=False) as s:
        return alerts.routes(s)


@router.delete("/alerts/routes/{route_id}", status_code=204)
def delete_route(route_id: RouteId, request: Request, db: Db, who: Admin) -> Response:
    with db.session() as s:
        alerts.delete_route(s, route_id)
    _changed(request)
    return Response(status_code=204)


@router.post("/alerts/adapter/{key}", include_in_schema=False)
async def adapt(
    key: Key, request: Request, payload: Annotated[dict[str, Any], Body()]
) -> dict[str, str]:
    """Alertmanager's webhook for ``key``: converted and delivered, or 502."""
    db: Database = request.app.state.db
    spec = await run_in_threadpool(_spec_or_none, db, key)
    offered = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    # one answer for "no such receiver" and "wrong token": names are not probed here
    if spec is None or not hmac.compare_digest(offered.encode(), spec.adapter_token.encode()):
        raise Unauthorized("send the receiver's adapter token as 'Authorization: Bearer ...'")
    if spec.kind not in ADAPTED:
        raise Conflict(
            f"receiver {key!r} is a {spec.kind} receiver: Alertmanager sends to it itself"
        )
    await delivery.deliver(adapter.outgoing(spec, payload))
    return {"receiver": spec.name, "status": "delivered"}


def _changed(request: Request) -> None:
    """After the change committed: whoever runs Alertmanager re-renders and reloads
    (``create_app(alerts_changed=...)``; nothing when Dockyard does not run it)."""
    hook: Callable[[], None] | None = request.app.state.alerts_changed
    if hook is not None:
        hook()


def _spec(db: Database, key: str) -> ReceiverSpec:
    with db.session(write=False) as s:
        return alerts.spec(s, key)


def _spec_or_none(db: Database, key: str) -> ReceiverSpec | None:
    try:
        return _spec(db, key)
    except NotFound:
        return None
