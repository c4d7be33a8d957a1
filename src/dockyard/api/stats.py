"""Pictures over time of an instance (its project's users) or a host (admins), asked of
the Prometheus that scrapes this cloud (``--prometheus-url``); monitor/stats.py says
what is drawn."""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request

from dockyard import model
from dockyard.api.deps import Admin, Db, Key, User
from dockyard.db import hosts, instances
from dockyard.errors import DockyardError
from dockyard.monitor import stats

router = APIRouter(tags=["monitoring"])
MAX_SINCE = 31 * 86_400  # Prometheus keeps 15 days by default; a month is generous
QUERY_SECONDS = 10.0
Since = Annotated[
    int, Query(ge=60, le=MAX_SINCE, description="seconds back from now (60 to 31 days)")
]


class MonitoringUnavailable(DockyardError):
    status = 503
    title = "Monitoring unavailable"
    retryable = True


@router.get("/instances/{key}/stats")
async def instance_stats(
    key: Key, request: Request, db: Db, who: User, since: Since = 3600
) -> model.Stats:
    """CPU (cores), memory working set, network and disk rates of the instance."""
    with db.session(write=False) as s:
        row = instances.get(s, who, key)
        subject, instance_id = row.name, row.id
    step = stats.step_for(since)
    return await _draw(request, subject, since, step, stats.instance_panels(instance_id, step))


@router.get("/hosts/{name}/stats")
async def host_stats(
    name: Key, request: Request, db: Db, _: Admin, since: Since = 3600
) -> model.Stats:
    """The same, summed over the host's instances, and the host's tasks."""
    with db.session(write=False) as s:
        host = hosts.by_name(s, name).name
    step = stats.step_for(since)
    return await _draw(request, host, since, step, stats.host_panels(host, step))


async def _draw(
    request: Request, subject: str, since: int, step: int, panels: list[stats.Panel]
) -> model.Stats:
    url: str | None = request.app.state.prometheus_url
    if not url:
        raise MonitoringUnavailable(
            "this server has no Prometheus to ask; start it with --prometheus-url URL "
            "(or run `dockyard up --monitoring`)"
        )
    end = time.time()
    window = {"start": end - since, "end": end, "step": step}
    async with httpx.AsyncClient(base_url=url, timeout=QUERY_SECONDS) as client:
        series = [await _series(client, p, window) for p in panels]
    return model.Stats(subject=subject, since=since, step=step, series=series)


async def _series(
    client: httpx.AsyncClient, panel: stats.Panel, window: dict[str, float]
) -> model.Series:
    points = _points(await _query_range(client, {"query": panel.query, **window}))
    summary = stats.summary([v for _, v in points])
    current, average, peak = summary if summary else (None, None, None)
    return model.Series(
        name=panel.name,
        unit=panel.unit,
        points=points,
        current=current,
        average=average,
        peak=peak,
    )


async def _query_range(client: httpx.AsyncClient, params: dict[str, Any]) -> Any:
    try:
        r = await client.get("/api/v1/query_range", params=params)
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise MonitoringUnavailable(
            f"Prometheus at {client.base_url} did not answer ({exc}); check that it runs"
        ) from exc
    if r.status_code != 200 or body.get("status") != "success":
        raise MonitoringUnavailable(
            f"Prometheus at {client.base_url} refused the query: {body.get('error', r.status_code)}"
        )
    return body["data"]["result"]


def _points(result: Any) -> list[tuple[float, float]]:
    """The one series of a sum (none when nothing was scraped); NaN and Inf left out."""
    if not result:
        return []
    out = []
    for t, v in result[0].get("values", []):
        value = float(v)
        if math.isfinite(value):
            out.append((float(t), value))
    return out
