"""Samples (monitor/drift.py's) as a prometheus-client collector, for the agent's and
the server's /metrics alike: one gauge family per metric name, built at scrape time
from whatever ``samples()`` returns then (no series when it returns nothing)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dockyard.monitor.drift import Sample


class SampleCollector(Collector):
    """``helps``: each metric name's HELP text."""

    def __init__(self, samples: Callable[[], list[Sample]], helps: dict[str, str]) -> None:
        self.samples, self.helps = samples, helps

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for s in self.samples():
            family = families.get(s.name)
            if family is None:
                family = GaugeMetricFamily(
                    s.name, self.helps.get(s.name, s.name), labels=list(s.labels)
                )
                families[s.name] = family
            family.add_metric(list(s.labels.values()), s.value)
        yield from families.values()
