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
from datetime import UTC, datetime

from dockyard.api.loops import LeasedLoop
from dockyard.api.watch import HostWatch
from dockyard.db import deploys, healing
from dockyard.db.session import Database

log = logging.getLogger(__name__)


class DeployController(LeasedLoop):
    def __init__(
        self, db: Database, watch: HostWatch, interval: float | None = 1.0, weigh: float = 1.0
    ) -> None:
        super().__init__(db, "deploys", interval)
        self.db, self.watch, self.weigh = db, watch, weigh

    def tick(self) -> list[str]:
        return self.step()

    def step(self, now: datetime | None = None) -> list[str]:
        """One pass over every running deploy (``now``: naive UTC, for tests' clocks);
        returns the hosts it woke."""
        if not self.lease.held():
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
