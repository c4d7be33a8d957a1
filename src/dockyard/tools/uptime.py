"""uptime(1) for a machine container: time since the container started and
the agent's load average of the container's own tasks.

Needed where a tool asks sysinfo(2), which returns the host's uptime and load.
"""

from __future__ import annotations

import argparse
import sys
import time

from dockyard.tools.sources import Container, Load, users


def pretty(seconds: float) -> str:
    """'up 2 days, 3 hours, 4 minutes' as uptime -p prints it."""
    minutes = int(seconds // 60)
    parts = []
    for name, size in (("week", 7 * 1440), ("day", 1440), ("hour", 60), ("minute", 1)):
        n, minutes = divmod(minutes, size)
        if n:
            parts.append(f"{n} {name}{'s' if n != 1 else ''}")
    return "up " + ", ".join(parts or ["0 minutes"])


def classic(seconds: float) -> str:
    """'up 5 min', 'up  3:04', 'up 2 days,  3:04' as procps prints it."""
    days, rest = divmod(int(seconds), 86400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    out = f"{days} day{'s' if days != 1 else ''}, " if days else ""
    return "up " + out + (f"{hours:2d}:{minutes:02d}" if hours else f"{minutes} min")


def load_text(load: Load) -> str:
    return f"load average: {load.one:.2f}, {load.five:.2f}, {load.fifteen:.2f}"


def line(up: float, load: Load, n_users: int, now: float | None = None) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    who = f"{n_users} user{'s' if n_users != 1 else ''}"
    return f" {clock} {classic(up)},  {who},  {load_text(load)}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="uptime", description="how long this container has run")
    p.add_argument("-p", "--pretty", action="store_true", help="show uptime in pretty format")
    p.add_argument("-s", "--since", action="store_true", help="when the container started")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    c = Container()
    up = c.uptime()
    if a.pretty:
        print(pretty(up))
    elif a.since:
        print(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() - up)))
    else:
        print(line(up, c.load(), users()))
    return 0
