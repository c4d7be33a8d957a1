"""What an instance's neighbours notice while something happens: lost pings.

A probe namespace pings an address every ``interval`` seconds while an action
runs (a daemon restart, later a migration); the packets that got no answer,
times the interval, are the outage seen from the network.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from dockyard.lab.procs import LabError


@dataclass(frozen=True)
class Outage:
    sent: int
    lost: int
    interval: float
    action_seconds: float  # how long the action itself took

    @property
    def seconds(self) -> float:
        return self.lost * self.interval


def pinged_during(
    probe_ns: str,
    ip: str,
    action: Callable[[], object],
    *,
    interval: float = 0.1,
    before: float = 1.0,
    after: float = 5.0,
) -> Outage:
    """Ping ``ip`` from the netns ``probe_ns`` from ``before`` seconds ahead of
    ``action`` until ``after`` seconds past its end."""
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{probe_ns}", "ping", "-n", "-i", str(interval), ip],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(before)
        started = time.monotonic()
        action()
        took = time.monotonic() - started
        time.sleep(after)
    finally:
        proc.send_signal(signal.SIGINT)  # ping prints its statistics and exits
        out, _ = proc.communicate(timeout=10)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    if not m:
        raise LabError(f"ping from {probe_ns} to {ip} said: {out[-300:]}")
    sent, received = int(m.group(1)), int(m.group(2))
    return Outage(sent, sent - received, interval, took)
