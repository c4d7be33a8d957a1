"""Run-once jobs across servers: a named lease only one server holds at a time.

Controllers that must not run twice (heartbeat expiry, migrations, deploys)
call ``lease.held()`` before each pass and do nothing when it is False. On
PostgreSQL the lease is a session advisory lock taken on a connection of the
lease's own: it is held as long as that connection lives, so a server that
dies (or loses its database connection) frees it at once, and the next
server's ``held()`` takes it over. SQLite serves one server, so its lease is
always held.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from dockyard.db.session import Database

log = logging.getLogger("dockyard.lease")


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock`` from a lease name."""
    return int.from_bytes(
        hashlib.sha256(f"dockyard:{name}".encode()).digest()[:8], "big", signed=True
    )


class Lease:
    """``held()`` is True while this process holds the lease named ``name``."""

    def __init__(self, db: Database, name: str) -> None:
        self.name, self._db, self._key = name, db, lock_key(name)
        self._pg = db.engine.dialect.name == "postgresql"
        self._lock = threading.Lock()
        self._conn: Any = None  # psycopg connection holding the advisory lock

    def held(self) -> bool:
        """Take the lease if nobody holds it; True if this process holds it now.
        Never raises: a database that does not answer means not held."""
        if not self._pg:
            return True
        with self._lock:
            try:
                if self._conn is not None:
                    self._conn.execute("SELECT 1")  # still connected: still ours
                    return True
                conn = self._db.dedicated_connection()
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
                if row and row[0]:
                    self._conn = conn
                    log.info("this server now runs %s", self.name)
                    return True
                conn.close()
                return False
            except Exception as exc:  # psycopg's errors: the connection (and the lock) is gone
                log.warning("lease %s: %s", self.name, exc)
                self._drop()
                return False

    def release(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # closing the session releases its advisory locks
            except Exception:
                pass
            self._conn = None
