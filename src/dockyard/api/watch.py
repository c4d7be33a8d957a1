"""Wake long polls when what they watch changes.

Two registries of the same kind: hosts (agents wait for their host's desired
state) and instances (users' ``--wait`` waits for an instance's state).
In-process notification makes a single server instant; every waiter also
re-reads from the database once a second, so several servers behind a load
balancer stay correct (only slower).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class Waiters:
    """Futures keyed by a name (a host name, an instance id), woken by ``notify``."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, key: str | None) -> None:
        """Thread-safe: called from request handlers after their commit."""
        if key is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake, key)

    def _wake(self, key: str) -> None:
        for fut in self._waiters.pop(key, set()):
            if not fut.done():
                fut.set_result(None)

    def register(self, key: str) -> asyncio.Future[None]:
        """Register before reading the generation, so no change slips between."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[key].add(fut)
        return fut

    async def wait(self, key: str, fut: asyncio.Future[None], timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            pass
        finally:
            self.cancel(key, fut)

    def cancel(self, key: str, fut: asyncio.Future[None]) -> None:
        waiting = self._waiters.get(key)
        if waiting is not None:
            waiting.discard(fut)
            if not waiting:
                del self._waiters[key]  # no empty sets left behind by timed-out waiters


class HostWatch(Waiters):
    """Hosts' desired state; ``instances`` holds the instances' registry."""

    def __init__(self) -> None:
        super().__init__()
        self.instances = Waiters()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        super().bind(loop)
        self.instances.bind(loop)
