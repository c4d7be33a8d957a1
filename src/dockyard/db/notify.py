"""Tell every server that something changed: PostgreSQL's LISTEN/NOTIFY.

A server wakes its own long polls in process (api/watch.py). A datacenter
runs several servers on one PostgreSQL behind a load balancer, so a change
committed through server A must also wake the agents and users long-polling
server B. A publishes ``(kind, key)`` with ``pg_notify`` on the channel
``dockyard_watch`` after its commit; every server LISTENs on a connection of
its own and wakes its waiters for that key. A server ignores what it sent
itself (it woke its own waiters already).

Delivery is best effort by design: a notification lost while a listener
reconnects is covered by the waiters' periodic re-read from the database,
which stays the truth. SQLite serves one server: its bus publishes nothing.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from dockyard.db.session import Database

log = logging.getLogger("dockyard.notify")
CHANNEL = "dockyard_watch"
RECONNECT_SECONDS = 1.0

Deliver = Callable[[str, str], None]  # (kind, key): "host"/"instance", its name or id


class Bus(Protocol):
    """What the watch needs from its neighbours: publish a change, hear theirs."""

    def publish(self, kind: str, key: str) -> None:
        """After the commit of a change to ``key``. Never raises: a failed publish
        only delays other servers' waiters until their next re-read."""
        ...

    def listen(self, deliver: Deliver, stop: threading.Event) -> None:
        """Block until ``stop`` is set, calling ``deliver`` for each change another
        server published. Reconnects by itself."""
        ...


class LocalBus:
    """One server (SQLite, or tests): nobody else to tell."""

    def publish(self, kind: str, key: str) -> None:
        return None

    def listen(self, deliver: Deliver, stop: threading.Event) -> None:
        stop.wait()


class PostgresBus:
    """NOTIFY on a publishing connection, LISTEN on a listening one; both autocommit
    connections of their own, outside the request pool."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._origin = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._conn: Any = None  # the publisher's psycopg connection, made on first use

    def publish(self, kind: str, key: str) -> None:
        payload = f"{self._origin} {kind} {key}"
        with self._lock:
            for attempt in (1, 2):  # a connection dropped since the last publish: once more
                try:
                    if self._conn is None:
                        self._conn = self._db.dedicated_connection()
                    self._conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                    return
                except Exception as exc:  # psycopg's errors; never fail the request
                    self._close()
                    if attempt == 2:
                        log.warning("could not tell other servers about %s %s: %s", kind, key, exc)

    def listen(self, deliver: Deliver, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn = self._db.dedicated_connection()
            except Exception as exc:
                log.warning("cannot listen for other servers' changes: %s; retrying", exc)
                stop.wait(RECONNECT_SECONDS)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                while not stop.is_set():
                    for note in conn.notifies(timeout=RECONNECT_SECONDS):
                        self._deliver(note.payload, deliver)
            except Exception as exc:
                log.warning("lost the connection that listens for other servers: %s", exc)
                stop.wait(RECONNECT_SECONDS)
            finally:
                conn.close()

    def _deliver(self, payload: str, deliver: Deliver) -> None:
        origin, _, rest = payload.partition(" ")
        kind, _, key = rest.partition(" ")
        if origin != self._origin and kind and key:
            deliver(kind, key)

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()


def bus_for(db: Database) -> LocalBus | PostgresBus:
    """The bus that reaches every server sharing ``db``."""
    if db.engine.dialect.name == "postgresql":
        return PostgresBus(db)
    return LocalBus()
