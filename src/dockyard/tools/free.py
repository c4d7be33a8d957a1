"""free(1) for a machine container: memory from the container's cgroup.

Needed where a tool asks the kernel through sysinfo(2) (busybox free), which
no /proc view can change. Output follows procps 4: used = total - available.
"""

from __future__ import annotations

import argparse
import sys

from dockyard.tools.sources import Container, Memory

UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="free", description="memory of this container", add_help=False)
    unit = p.add_mutually_exclusive_group()
    for flag, name in (
        ("-b", "bytes"),
        ("-k", "kibibytes"),
        ("-m", "mebibytes"),
        ("-g", "gibibytes"),
    ):
        unit.add_argument(flag, dest="unit", action="store_const", const=flag[1], help=name)
    unit.add_argument("-h", "--human", dest="unit", action="store_const", const="h")
    p.add_argument("-t", "--total", action="store_true", help="a line of totals")
    p.add_argument("--help", action="help")
    p.set_defaults(unit="k")
    return p.parse_args(argv)


def render(m: Memory, unit: str = "k", total: bool = False) -> str:
    def f(n: int) -> str:
        return human(n) if unit == "h" else str(n // UNITS[unit])

    head = ["total", "used", "free", "shared", "buff/cache", "available"]
    rows = [
        ("Mem:", [m.total, m.used, m.free, m.shared, m.cache, m.available]),
        ("Swap:", [m.swap_total, m.swap_used, m.swap_total - m.swap_used]),
    ]
    if total:
        rows.append(
            (
                "Total:",
                [m.total + m.swap_total, m.used + m.swap_used, m.free + m.swap_total - m.swap_used],
            )
        )
    lines = [" " * 7 + "".join(f"{h:>12}" for h in head)]
    lines += [f"{label:<7}" + "".join(f"{f(v):>12}" for v in vals) for label, vals in rows]
    return "\n".join(lines) + "\n"


def human(n: int) -> str:
    value = float(n)
    for suffix in ("B", "Ki", "Mi", "Gi", "Ti"):
        if value < 1024 or suffix == "Ti":
            return f"{value:.0f}{suffix}" if suffix == "B" else f"{value:.1f}{suffix}"
        value /= 1024
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    sys.stdout.write(render(Container().memory(), a.unit, a.total))
    return 0
