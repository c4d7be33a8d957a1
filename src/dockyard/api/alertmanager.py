"""Firing alerts, silences and acknowledgements, proxied to Alertmanager's API v2.

The CLI talks to Dockyard only; the server reaches Alertmanager at
``app.state.alertmanager_url`` (ALERTMANAGER_URL). Admins see and silence
everything. Others see the alerts and silences of their own project (label
``project``); a member's silence always carries ``project="<theirs>"``, so it
cannot hide another project's alerts.

An acknowledgement is a silence: ``POST /alerts/{fingerprint}/ack`` silences
exactly that alert's label set, for a while (24 h unless told), with the caller
as its author and ``ack: <comment>`` as its comment. Alertmanager has no other
notion of "acknowledged"; expiring the silence un-acknowledges.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from dockyard.api.alertmanager_client import Alertmanager
from dockyard.api.deps import Db, Member, User
from dockyard.db import alerts
from dockyard.db.identity import Principal
from dockyard.db.session import Database
from dockyard.errors import Forbidden, NotFound
from dockyard.model.alerts import Ack, Matcher, SilenceCreate

router = APIRouter(tags=["alerts"])
AmId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-zA-Z-]+$")]


def _am(request: Request) -> Alertmanager:
    return Alertmanager(request.app.state.alertmanager_url)


async def _project(db: Database, who: Principal) -> str | None:
    """None for admins (every project), else the caller's project's name."""
    if who.is_admin:
        return None

    def read() -> str | None:
        with db.session(write=False) as s:
            return alerts.project_name(s, who.project_id)

    return await run_in_threadpool(read) or "-"  # a user without a project sees nothing


@router.get("/alerts")
async def list_alerts(request: Request, db: Db, who: User) -> list[dict[str, Any]]:
    """Active alerts as Alertmanager has them (``status.state``: active, suppressed)."""
    project = await _project(db, who)
    found = await _am(request).alerts()
    return [a for a in found if project is None or a.get("labels", {}).get("project") == project]


@router.get("/alerts/silences")
async def list_silences(request: Request, db: Db, who: User) -> list[dict[str, Any]]:
    project = await _project(db, who)
    found = await _am(request).silences()
    return [s for s in found if project is None or _scoped(s, project)]


@router.post("/alerts/silences", status_code=201)
async def create_silence(
    body: SilenceCreate, request: Request, db: Db, who: Member
) -> dict[str, str]:
    """A silence from now for ``duration_s``, created by the caller."""
    project = await _project(db, who)
    matchers = list(body.matchers)
    if project is not None:
        if any(m.name == "project" and not _pins(m, project) for m in matchers):
            raise Forbidden(f"you may silence project {project!r} only; drop the project matcher")
        matchers.append(Matcher(name="project", value=project))
    sid = await _am(request).silence(matchers, body.duration_s, who.name, body.comment)
    return {"id": sid}


@router.delete("/alerts/silences/{silence_id}", status_code=204)
async def expire_silence(silence_id: AmId, request: Request, db: Db, who: Member) -> Response:
    project = await _project(db, who)
    am = _am(request)
    if project is not None:
        mine = [s["id"] for s in await am.silences() if _scoped(s, project)]
        if silence_id not in mine:
            raise NotFound(
                f"no silence {silence_id!r} of your project; see `dockyard alert silence list`"
            )
    await am.expire(silence_id)
    return Response(status_code=204)


@router.post("/alerts/{fingerprint}/ack", status_code=201)
async def ack(
    fingerprint: AmId, request: Request, db: Db, who: Member, body: Ack | None = None
) -> dict[str, str]:
    """Acknowledge an alert: silence its exact label set (see the module's docstring)."""
    body = body or Ack()
    project = await _project(db, who)
    am = _am(request)
    alert = next((a for a in await am.alerts() if a.get("fingerprint") == fingerprint), None)
    labels = alert.get("labels", {}) if alert else {}
    if alert is None or (project is not None and labels.get("project") != project):
        raise NotFound(f"no firing alert {fingerprint!r}; see `dockyard alert list`")
    matchers = [Matcher(name=k, value=str(v)) for k, v in sorted(labels.items())]
    sid = await am.silence(matchers, body.duration_s, who.name, f"ack: {body.comment}")
    return {"id": sid, "alert": fingerprint}


def _pins(m: Matcher, project: str) -> bool:
    return m.value == project and m.is_equal and not m.is_regex


def _scoped(silence: dict[str, Any], project: str) -> bool:
    """The silence holds only for ``project``'s alerts."""
    return any(
        x.get("name") == "project"
        and x.get("value") == project
        and not x.get("isRegex")
        and x.get("isEqual", True)
        for x in silence.get("matchers", [])
    )
