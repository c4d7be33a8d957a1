"""Host weighers: higher weight wins."""

from __future__ import annotations

from typing import Protocol

from dockyard.scheduler.state import HostState, Request


class Weigher(Protocol):
    def weigh(self, host: HostState, req: Request) -> float: ...


class RamWeigher:
    """Spread by free RAM (multiplier > 0) or pack onto the fullest host (< 0)."""

    def __init__(self, multiplier: float = 1.0) -> None:
        self.multiplier = multiplier

    def weigh(self, host: HostState, req: Request) -> float:
        return self.multiplier * host.free_memory_mb
