"""The server's background controllers: one pass every few seconds in a thread of its
own, by the one server of several that holds the controller's lease.

    MoveChecker (api/moves.py)          lease "migrations"  timeouts, schedules, GC
    DeployController (api/deploys.py)   lease "deploys"     rollouts, rollbacks, healing
    BuildController (api/builds.py)     lease "builds"      timeouts, requeues, assignment

A pass that fails is logged and the next tick tries again; ``kick`` makes the next
pass come now (a request that gave the controller work); ``interval=None`` starts no
thread (tests call the pass themselves with their own clock).
"""

from __future__ import annotations

import logging
import threading

from dockyard.db.lease import Lease
from dockyard.db.session import Database

log = logging.getLogger(__name__)


class LeasedLoop:
    """Calls ``tick`` every ``interval`` seconds, or sooner when kicked, until stopped.
    ``tick`` checks ``self.lease.held()`` itself (a pass driven by a test does too)."""

    def __init__(self, db: Database, name: str, interval: float | None) -> None:
        self.name, self.interval = name, interval
        self.lease = Lease(db, name)
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        """Start the thread (again after a stop: an app's lifespan may run twice)."""
        if self.interval is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.lease.release()

    def kick(self) -> None:
        """There is work: pass soon, not at the next tick."""
        self._kick.set()

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.is_set():
            self._kick.wait(self.interval)
            self._kick.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception:  # a pass that failed is retried on the next tick
                log.exception("the %s controller's pass failed", self.name)
