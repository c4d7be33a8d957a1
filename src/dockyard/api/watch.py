"""Wake long-polling agents when their host's desired state changes.

In-process notification makes a single server instant; every waiter also
re-reads the host's generation from the database once a second, so several
servers behind a load balancer stay correct (only slower).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class HostWatch:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, host: str | None) -> None:
        """Thread-safe: called from request handlers after their commit."""
        if host is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake, host)

    def _wake(self, host: str) -> None:
        for fut in self._waiters.pop(host, set()):
            if not fut.done():
                fut.set_result(None)

    def register(self, host: str) -> asyncio.Future[None]:
        """Register before reading the generation, so no change slips between."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[host].add(fut)
        return fut

    async def wait(self, host: str, fut: asyncio.Future[None], timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            pass
        finally:
            self.cancel(host, fut)

    def cancel(self, host: str, fut: asyncio.Future[None]) -> None:
        self._waiters.get(host, set()).discard(fut)
