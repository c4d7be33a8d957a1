"""What ``server stats`` and ``host stats`` draw: one PromQL query per panel, the step
between points, and each series' current, average and peak.

Pure: the server sends the queries to Prometheus's query API (api/stats.py) and the CLI
draws the points (cli/stats.py). The names are monitor/README.md's.
"""

from __future__ import annotations

from dataclasses import dataclass

POINTS = 60  # about this many points per panel, whatever the range
MIN_STEP = 15  # seconds: Prometheus's default scrape interval
MIN_WINDOW = 60  # a rate needs at least two scrapes in its window


@dataclass(frozen=True)
class Panel:
    """One picture: ``query`` gives one series (a sum), in ``unit``."""

    name: str
    unit: str
    query: str


def step_for(since: int) -> int:
    """Seconds between points: about POINTS over ``since``, never below MIN_STEP."""
    return max(MIN_STEP, -(-since // POINTS))


def quote(value: str) -> str:
    """A PromQL string literal of ``value`` (backslash and double quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def instance_panels(instance_id: str, step: int) -> list[Panel]:
    """CPU, memory, network and disk of one instance."""
    return _panels(f"instance_id={quote(instance_id)}", step)


def host_panels(host: str, step: int) -> list[Panel]:
    """The same panels summed over the instances a host runs, and its tasks."""
    sel = f"host={quote(host)}"
    tasks = Panel("tasks", "", f"sum(dockyard_host_tasks{{{sel}}})")
    return [*_panels(sel, step), tasks]


def _panels(sel: str, step: int) -> list[Panel]:
    w = f"[{max(step, MIN_WINDOW)}s]"

    def rate(metric: str) -> str:
        return f"sum(rate(dockyard_instance_{metric}{{{sel}}}{w}))"

    return [
        Panel("cpu", "cores", rate("cpu_seconds_total")),
        Panel("memory", "bytes", f"sum(dockyard_instance_memory_working_set_bytes{{{sel}}})"),
        Panel("net rx", "bytes/s", rate("network_receive_bytes_total")),
        Panel("net tx", "bytes/s", rate("network_transmit_bytes_total")),
        Panel("disk read", "bytes/s", rate("disk_read_bytes_total")),
        Panel("disk write", "bytes/s", rate("disk_written_bytes_total")),
    ]


def summary(values: list[float]) -> tuple[float, float, float] | None:
    """(current, average, peak) of a series, or None when it has no point."""
    if not values:
        return None
    return values[-1], sum(values) / len(values), max(values)
