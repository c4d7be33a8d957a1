"""``server stats NAME`` and ``host stats NAME``: CPU, memory, network and disk over the
last hour (or ``--since``) as terminal sparklines, with current, average and peak."""

from __future__ import annotations

import argparse

from dockyard import units
from dockyard.cli.client import Api, CliError
from dockyard.cli.output import emit, table

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

BARS = "▁▂▃▄▅▆▇█"
GAP = " "  # a step with no sample (not scraped, or the instance was not running)


def sparkline(points: list[list[float]], start: float, step: int, slots: int) -> str:
    """One character per step from ``start``: the bar's height is the value against the
    series' peak (0 at the bottom), a blank where Prometheus had no sample."""
    cells = [GAP] * slots
    peak = max((v for _, v in points), default=0.0)
    for t, v in points:
        i = round((t - start) / step)
        if 0 <= i < slots:
            level = 0 if peak <= 0 else min(len(BARS) - 1, int(v / peak * (len(BARS) - 1) + 0.5))
            cells[i] = BARS[level]
    return "".join(cells)


def human(value: float | None, unit: str) -> str:
    """A value in its unit for a person: 1.5 GiB, 230 KiB/s, 0.25 cores."""
    if value is None:
        return "-"
    if unit.startswith("bytes"):
        rest = unit[len("bytes") :]
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or suffix == "TiB":
                return f"{value:.3g} {suffix}{rest}"
            value /= 1024
    return f"{value:.3g} {unit}".rstrip()


def draw(stats: dict[str, Any]) -> None:
    step, since = stats["step"], stats["since"]
    slots = max(1, since // step)
    firsts = [s["points"][-1][0] for s in stats["series"] if s["points"]]
    end = max(firsts, default=0.0)
    start = end - (slots - 1) * step
    print(f"{stats['subject']}, the last {units.format_duration(since)} (a bar per {step} s)")
    rows = [
        [
            s["name"],
            sparkline(s["points"], start, step, slots) if s["points"] else "no samples",
            human(s["current"], s["unit"]),
            human(s["average"], s["unit"]),
            human(s["peak"], s["unit"]),
        ]
        for s in stats["series"]
    ]
    table(rows, ["", "", "NOW", "AVERAGE", "PEAK"])


def _since(text: str) -> int:
    try:
        return units.parse_duration(text)
    except ValueError as exc:
        raise CliError(f"--since {text}: {exc}") from exc


def _show(path: str) -> Any:
    def run(api: Api, a: argparse.Namespace) -> None:
        stats = api.get(f"{path}/{a.name}/stats?since={_since(a.since)}")
        if a.format == "json":
            emit(stats, a.format, [])
        else:
            draw(stats)

    return run


def _verb(sub: Any, fmt: argparse.ArgumentParser, path: str, what: str) -> None:
    p = sub.add_parser(
        "stats",
        parents=[fmt],
        help=f"CPU, memory, network and disk of {what} as sparklines (from Prometheus)",
    )
    p.add_argument("name")
    p.add_argument("--since", default="1h", help="how far back (15m, 6h, 2d; default 1h)")
    p.set_defaults(run=_show(path))


def add_server_verbs(srv: Any, fmt: argparse.ArgumentParser) -> None:
    _verb(srv, fmt, "/instances", "an instance")


def add_host_verbs(ho: Any, fmt: argparse.ArgumentParser) -> None:
    _verb(ho, fmt, "/hosts", "a host's instances")
