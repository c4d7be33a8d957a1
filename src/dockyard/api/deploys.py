"""The deploy controller: drives every running deploy a step at a time, and heals
stacks at rest (db/healing.py).

Runs in each server's process like the migration checker (api/moves.py): a thread
that wakes every ``interval`` seconds, or at once when a request began a deploy
(``kick``), and does a pass only while this server holds the "deploys" lease, so
several servers on one PostgreSQL never drive one deploy twice. Each deploy's step
is its own transaction under the stack's row lock (db/deploys.py ``advance``).

Entry points for tests and the lab: ``DeployController.step(now)`` runs one pass
(the app's is ``app.state.deploy_controller``); ``interval=None`` starts no thread.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from dockyard.api.watch import HostWatch
from dockyard.db import deploys, healing
from dockyard.db.lease import Lease
from dockyard.db.session import Database

log = logging.getLogger(__name__)


class DeployController:
    def __init__(
        self, db: Database, watch: HostWatch, interval: float | None = 1.0, weigh: float = 1.0
    ) -> None:
        self.db, self.watch, self.interval, self.weigh = db, watch, interval, weigh
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._lease = Lease(db, "deploys")
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="deploys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._lease.release()

    def kick(self) -> None:
        """A deploy began or an instance changed: pass soon, not at the next tick."""
        self._kick.set()

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.is_set():
            self._kick.wait(self.interval)
            self._kick.clear()
            if self._stop.is_set():
                return
            try:
                self.step()
            except Exception:  # a pass that failed is retried on the next tick
                log.exception("deploy controller pass failed")

    def step(self, now: datetime | None = None) -> list[str]:
        """One pass over every running deploy (``now``: naive UTC, for tests' clocks);
        returns the hosts it woke."""
        if not self._lease.held():
            return []
        now = now or datetime.now(UTC).replace(tzinfo=None)
        with self.db.session(write=False) as s:
            work = deploys.running_ids(s)
        woke: list[str] = []
        for deploy_id in work:
            try:
                with self.db.session() as s:
                    woke += deploys.advance(s, deploy_id, now, self.weigh)
            except Exception:
                log.exception("deploy %s: pass failed; retried on the next", deploy_id)
        woke += self.heal(now)
        for host in sorted(set(woke)):
            self.watch.notify(host)
        return woke

    def heal(self, now: datetime) -> list[str]:
        """Stacks at rest: restart unhealthy members and start stopped ones, replace
        those in ERROR, stuck in a task or on down hosts (within a bound), create
        missing ones (db/healing.py)."""
        with self.db.session(write=False) as s:
            work = healing.stack_ids(s)
        woke: list[str] = []
        for stack_id in work:
            try:
                with self.db.session() as s:
                    woke += healing.heal(s, stack_id, now, self.weigh)
            except Exception:
                log.exception("stack %s: healing pass failed; retried on the next", stack_id)
        return woke
