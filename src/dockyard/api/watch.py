"""Wake long polls when what they watch changes.

Four registries of the same kind: hosts (agents wait for their host's desired
state), instances (users' ``--wait`` waits for an instance's state, readers of a
build's log), and recoveries and builds (agents wait for their host's recovery
and build orders: kept apart from the hosts' registry, which every create and
report on the host wakes, so those wake no read of orders).
In-process notification makes a single server instant. Several servers on
one PostgreSQL tell each other through the database's LISTEN/NOTIFY
(db/notify.py): a change committed through one wakes the waiters of all.
Every waiter also re-reads from the database every ``reread`` seconds (1 by
default), so a notification lost while a listener reconnects only delays.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol, TypeVar

from starlette.concurrency import run_in_threadpool

from dockyard.db.notify import Bus, LocalBus


class _Generational(Protocol):
    generation: int


G = TypeVar("G", bound=_Generational)


class Waiters:
    """Futures keyed by a name (a host name, an instance id), woken by ``notify``
    here and by the same ``kind`` of change published by other servers."""

    def __init__(self, kind: str, bus: Bus) -> None:
        self.kind, self._bus = kind, bus
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, key: str | None) -> None:
        """Thread-safe: called from request handlers after their commit."""
        if key is None:
            return
        self.wake(key)
        self._bus.publish(self.kind, key)

    def wake(self, key: str) -> None:
        """Thread-safe: wake this server's waiters on ``key`` only."""
        if self._loop is not None:
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

    async def wait(self, key: str, fut: asyncio.Future[None], timeout: float) -> bool:
        """Until ``fut`` is woken (True) or ``timeout`` passes (False); ``fut`` is done
        with either way.

        The waiter awaits ``fut`` itself (not through shield and wait_for, whose layers
        each took a turn of the event loop), so a wake-up resumes it at the loop's next
        turn: an agent's long poll starts reading a create's desired state before the
        create's own answer has gone out."""
        try:
            async with asyncio.timeout(timeout):
                await fut
            return True
        except TimeoutError:
            return False
        finally:
            self.cancel(key, fut)

    async def poll(
        self,
        key: str,
        since: int,
        wait: float,
        read: Callable[[], G],
        reread: float,
        unchanged: Callable[[int], bool] | None = None,
    ) -> G:
        """A long poll of ``key``: ``read()`` (in a worker thread) answered as soon as its
        generation differs from ``since``, else after ``wait`` seconds; re-read at least
        every ``reread`` seconds (other servers' changes, if a wake-up was lost).
        ``unchanged(since)``, if given, is a cheap check asked first on each wake-up
        while there is time left: True, and ``read`` is not called."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait  # an early wake-up with nothing to say keeps waiting
        while True:
            fut = self.register(key)
            left = deadline - loop.time()
            if left > 0 and unchanged is not None and await run_in_threadpool(unchanged, since):
                await self.wait(key, fut, min(reread, left))
                continue
            state = await run_in_threadpool(read)
            left = deadline - loop.time()
            if state.generation != since or left <= 0:
                self.cancel(key, fut)
                return state
            await self.wait(key, fut, min(reread, left))

    def cancel(self, key: str, fut: asyncio.Future[None]) -> None:
        waiting = self._waiters.get(key)
        if waiting is not None:
            waiting.discard(fut)
            if not waiting:
                del self._waiters[key]  # no empty sets left behind by timed-out waiters


class HostWatch(Waiters):
    """Hosts' desired state; ``instances``, ``recoveries`` and ``builds`` hold the
    other registries.

    ``start`` binds them all to the server's event loop and listens for other
    servers' changes in a thread until ``stop``."""

    def __init__(self, bus: Bus | None = None, reread: float = 1.0) -> None:
        bus = bus or LocalBus()
        super().__init__("host", bus)
        self.instances = Waiters("instance", bus)
        self.recoveries = Waiters("recovery", bus)  # by host name
        self.builds = Waiters("build", bus)  # by host name: build orders
        self.reread, self.bus = reread, bus
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        for waiters in self.registries():
            waiters.bind(loop)
        self._listener = threading.Thread(
            target=self.bus.listen, args=(self._heard, self._stop), daemon=True, name="watch-bus"
        )
        self._listener.start()

    def registries(self) -> tuple[Waiters, ...]:
        return (self, self.instances, self.recoveries, self.builds)

    def _heard(self, kind: str, key: str) -> None:
        for waiters in self.registries():
            if waiters.kind == kind:
                waiters.wake(key)

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
