"""The primary registry's garbage collection, kept apart from every push.

Distribution collects only while nothing writes: a push during a collection is
refused (the registry is stopped), and a blob uploaded just before it starts
whose manifest lands after it is swept, so the manifest names a missing blob.
Pushes come from agents (snapshot and migration orders) and from servers
(image imports), so a collection waits for both:

    image delete  ─► request(url)           requested_at = now (committed with the answer)
    periodic snapshots pruned ─► the same (api/moves.py's checker)
    the collector (api/registry.py, under the "registry-gc" lease), every few seconds:
        open_window(url)   running_since = now, committed: the window opens first
        pushes(s)          snapshot orders out, migrations and evacuations in flight
                           (the push, then the target's pull of it)
            any  ─► postpone(url, why): window closed, the request kept for later
            none ─► PushGate.collecting(): no server push holds the gate
                    stop, garbage-collect, start; finish(url): window closed, and
                    hosts whose orders waited are woken
    a host's desired state  withhold(s, state): no SnapshotOrder while a window is open
    a server's push         PushGate.pushing(): waits while a collection runs

Why the window opens before the check: a snapshot recorded before the window's
commit is seen by the check (and the collection waits); one recorded after it is
built into a desired state that reads the open window (and its order waits). So
no order is handed out during a collection, and no collection starts while one
is out. An agent that holds an order finishes it (push, report) before the next
collection; a migration's stopped source waits at most one collection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dockyard import model
from dockyard.db import hosts, lease
from dockyard.db import models as m
from dockyard.db.session import Database
from dockyard.migration.cold import Status
from dockyard.model import TaskState

# a window this old belongs to a server that died mid-collection: orders flow again
STALE_WINDOW = timedelta(hours=1)
_SNAPSHOTTING = Status.snapshotting.value  # a migration's push phase
# ... and the target's pull of what it pushed: a pull refused during a collection is
# retried with back-off (compute/agent.py), but a long collection must not fail a move
_MOVING = (Status.snapshotting.value, Status.starting.value)


def request(s: Session, url: str) -> None:
    """A collection of ``url`` is wanted (an image's manifest was deleted)."""
    row = _row(s, url)
    row.requested_at = m.now()


def describe(s: Session, url: str) -> str | None:
    """For ``registry list``: what the collection of ``url`` is doing."""
    row = s.get(m.RegistryGc, url)
    if row is None:
        return None
    # a window opened to check again whether a postponed collection may run is not a
    # collection: until the check passes (``begin``), it still waits
    if row.running_since is not None and not row.postponed:
        return f"running since {row.running_since:%Y-%m-%d %H:%M:%S}Z"
    if row.requested_at is not None:
        why = f" until {row.postponed} ends" if row.postponed else ""
        return f"waiting{why}"
    return f"done {row.finished_at:%Y-%m-%d %H:%M:%S}Z" if row.finished_at else None


def open_window(s: Session, url: str) -> datetime | None:
    """Open the maintenance window when a collection is wanted; returns the request's
    time (for ``finish``), None when nothing is wanted."""
    row = _row(s, url)
    if row.requested_at is None:
        return None
    row.running_since = m.now()
    return row.requested_at


def begin(s: Session, url: str) -> None:
    """The check passed: nothing pushes, the collection runs now."""
    _row(s, url).postponed = None


def postpone(s: Session, url: str, why: str) -> None:
    """Close the window, keep the request: pushes are in flight."""
    row = _row(s, url)
    row.running_since, row.postponed = None, why[:1024]


def finish(s: Session, url: str, since: datetime) -> list[str]:
    """Close the window after a collection of the request made at ``since`` (a later
    request stays); returns the hosts whose snapshot orders waited, bumped."""
    row = _row(s, url)
    row.running_since, row.postponed, row.finished_at = None, None, m.now()
    if row.requested_at is not None and row.requested_at <= since:
        row.requested_at = None
    woken = set()
    for name, host_id in _pushing_hosts(s):
        hosts.bump(s, host_id)
        woken.add(name)
    return sorted(woken)


def close_stale(s: Session) -> None:
    """Close windows a dead collector left open (called by the lease's new holder)."""
    s.execute(update(m.RegistryGc).values(running_since=None))


def pushes(s: Session) -> list[str]:
    """What pushes to the registry now (or is ordered to): one line each."""
    snaps = s.scalars(
        select(m.Instance.name).where(
            m.Instance.task_state == TaskState.snapshotting.value,
            m.Instance.deleted_at.is_(None),
        )
    )
    moving = s.scalars(
        select(m.Instance.name)
        .join(m.Migration, m.Migration.instance_id == m.Instance.id)
        .where(m.Migration.status.in_(_MOVING))
    )
    return [f"a snapshot of {n}" for n in snaps] + [f"a migration of {n}" for n in moving]


def window_open(s: Session) -> bool:
    since = s.scalar(
        select(m.RegistryGc.running_since).where(m.RegistryGc.running_since.is_not(None))
    )
    return since is not None and m.now() - since < STALE_WINDOW


def withhold(s: Session, state: model.DesiredState) -> model.DesiredState:
    """``state`` without snapshot orders while a collection runs (they go out after it:
    ``finish`` bumps their hosts)."""
    if any(i.snapshot is not None for i in state.instances) and window_open(s):
        for inst in state.instances:
            inst.snapshot = None
    return state


def _pushing_hosts(s: Session) -> list[tuple[str, str]]:
    snaps = (
        select(m.Host.name, m.Host.id)
        .join(m.Instance, m.Instance.host_id == m.Host.id)
        .where(
            m.Instance.task_state == TaskState.snapshotting.value, m.Instance.deleted_at.is_(None)
        )
    )
    moving = (
        select(m.Host.name, m.Host.id)
        .join(m.Migration, m.Migration.source_host_id == m.Host.id)
        .where(m.Migration.status == _SNAPSHOTTING)
    )
    return [(r.name, r.id) for q in (snaps, moving) for r in s.execute(q)]


def _row(s: Session, url: str) -> m.RegistryGc:
    row = s.scalar(select(m.RegistryGc).where(m.RegistryGc.url == url).with_for_update())
    if row is None:
        row = m.RegistryGc(url=url)
        s.add(row)
        s.flush()
    return row


class _LocalGate:
    """One process's pushes and collection of one registry (SQLite: one server)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pushing, self.collecting = 0, False


_LOCAL: dict[int, _LocalGate] = {}
_LOCAL_LOCK = threading.Lock()


class PushGate:
    """Servers' own pushes hold the gate shared, a collection exclusively.

    On PostgreSQL the gate is an advisory lock on a connection of its own, so the
    pushes of every server sharing the database count, and a server that dies
    frees its hold at once; SQLite serves one server, so a lock in this process
    (shared by every gate of the same registry)."""

    def __init__(self, db: Database, url: str) -> None:
        self._db, self._key = db, lease.lock_key(f"registry-push:{url.rstrip('/')}")
        self._pg = db.engine.dialect.name == "postgresql"
        with _LOCAL_LOCK:
            self._local = _LOCAL.setdefault(self._key, _LocalGate())

    @contextmanager
    def pushing(self) -> Iterator[None]:
        """Held during a push; waits while a collection runs."""
        if self._pg:
            with self._connection() as conn:
                conn.execute("SELECT pg_advisory_lock_shared(%s)", (self._key,))
                yield
            return
        local = self._local
        with local.cond:
            local.cond.wait_for(lambda: not local.collecting)
            local.pushing += 1
        try:
            yield
        finally:
            with local.cond:
                local.pushing -= 1
                local.cond.notify_all()

    @contextmanager
    def collecting(self) -> Iterator[bool]:
        """True (and held) when no push holds the gate; False: a push is under way."""
        if self._pg:
            with self._connection() as conn:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
                yield bool(row and row[0])
            return
        local = self._local
        with local.cond:
            free = local.pushing == 0 and not local.collecting
            local.collecting = local.collecting or free
        try:
            yield free
        finally:
            if free:
                with local.cond:
                    local.collecting = False
                    local.cond.notify_all()

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        conn = self._db.dedicated_connection()
        try:
            yield conn
        finally:
            conn.close()  # closing the session releases its advisory locks
