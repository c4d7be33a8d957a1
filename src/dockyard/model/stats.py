"""Pictures of an instance or a host over time, from Prometheus (api/stats.py)."""

from __future__ import annotations

from dockyard.model.base import Schema


class Series(Schema):
    """One panel: ``points`` are [unix seconds, value]; the summary is None when
    Prometheus has no sample in the range."""

    name: str
    unit: str
    points: list[tuple[float, float]]
    current: float | None
    average: float | None
    peak: float | None


class Stats(Schema):
    subject: str
    since: int
    step: int
    series: list[Series]
