"""Engines and sessions. SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

__all__ = ["Database", "DatabaseBusy", "Session", "WriteConflict", "upgrade"]

from dockyard.errors import Conflict, DockyardError


class WriteConflict(Conflict):
    """A write broke a constraint (a unique name or IP taken meanwhile, a row still referenced)."""


class DatabaseBusy(DockyardError):
    """The database stayed locked past the busy timeout, or the server lost a deadlock."""

    status = 503
    title = "Service unavailable"
    retryable = True


_HERE = Path(__file__).parent
HOST_DOWN_AFTER = timedelta(seconds=30)  # three missed heartbeats of an agent (every 10 s)
T = TypeVar("T")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=20,
            max_overflow=20,
        )
        _sqlite_pragmas(engine)
        return engine
    return create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL, a busy timeout, and BEGIN IMMEDIATE for claim transactions.

    pysqlite's own transaction handling is switched off so that a claim can
    take the write lock up front (``sqlite_begin="IMMEDIATE"``): an upgrade
    from a read snapshot to a write fails without waiting in WAL mode.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _hold(session: Session, instance: object) -> None:
    """Keep every row a session loads until the session ends (SQLAlchemy's "strong
    reference" recipe). The identity map holds rows weakly: a row that one function
    loaded and dropped was read again by the next (``s.get``, a lazy load), several
    times in one request (a report PUT read its instance twice). Sessions here live
    for one request or one pass, so what they hold is what they read anyway."""
    session.info.setdefault("held", []).append(instance)


def _fresh_when_locked(state: ORMExecuteState) -> None:
    """A SELECT ... FOR UPDATE reloads the rows it locks. A row this session already
    holds (see _hold) would otherwise come back with the values read before the lock,
    and lock-then-read code (a volume's attachment, a project's quota) would decide on
    them (PostgreSQL; SQLite's writers hold the whole database)."""
    if state.is_select and getattr(state.statement, "_for_update_arg", None) is not None:
        state.update_execution_options(populate_existing=True)


class Database:
    """An engine and its sessions.

    On SQLite a writing session begins IMMEDIATE (takes the write lock up
    front, waiting up to the busy timeout); a read-only one begins DEFERRED.
    A deferred transaction that reads and then writes fails at once with
    "database is locked" in WAL mode when another writer got in between.
    PostgreSQL ignores the option; claims lock host rows there instead.

    ``host_down_after`` is how long a host may miss heartbeats before what is read
    through these sessions calls it down (``dockyard-server --host-down-after``);
    every session carries it in ``Session.info`` for db/hosts.py to read.
    """

    def __init__(self, url: str, host_down_after: timedelta = HOST_DOWN_AFTER) -> None:
        self.url = url
        self.host_down_after = host_down_after
        self.engine = make_engine(url)
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._writes = sessionmaker(writer, expire_on_commit=False)
        for factory in (self._reads, self._writes):
            event.listen(factory, "loaded_as_persistent", _hold)
            event.listen(factory, "do_orm_execute", _fresh_when_locked)
        self._write_lock = threading.Lock()

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def dedicated_connection(self) -> Any:
        """PostgreSQL only: a psycopg connection of its own, outside the pool, in
        autocommit (for LISTEN and for advisory locks held as long as it lives)."""
        import psycopg  # a SQLite server never loads it

        url = self.engine.url.set(drivername="postgresql")
        return psycopg.connect(
            url.render_as_string(hide_password=False), autocommit=True, connect_timeout=5
        )  # a PostgreSQL that does not answer must not hold requests for long

    @contextmanager
    def session(self, write: bool = True) -> Iterator[Session]:
        """One transaction, committed when the block ends (rolled back if it raises).

        Callers in the API finish their work, commit and convert to wire models inside
        the block, so the answer is sent only after the commit; a failed commit raises
        ``WriteConflict`` (409) or ``DatabaseBusy`` (503), which is then the answer.
        Blocking: call it from a worker thread, never on the event loop.
        """
        try:
            with self._transaction(write) as s:
                yield s
        except IntegrityError as exc:
            raise WriteConflict(
                f"the change conflicts with other records ({_first_line(exc)}); "
                "reload and try again"
            ) from exc
        except OperationalError as exc:
            raise DatabaseBusy(
                f"the database is busy ({_first_line(exc)}); try again in a moment"
            ) from exc

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Session]:
        if write and self.is_sqlite:
            # SQLite's busy handler sleeps and polls (up to 100 ms a try); queueing the
            # writers of this process on a lock wakes the next one as soon as it is free
            with self._write_lock, self._writes.begin() as s:
                s.info["host_down_after"] = self.host_down_after
                yield s
            return
        factory = self._writes if write else self._reads
        with factory.begin() as s:
            s.info["host_down_after"] = self.host_down_after
            yield s

    def retry(self, fn: Callable[[], T], attempts: int = 8) -> T:
        """Run a claim again when it lost a race on a unique key or a lock."""
        for attempt in range(attempts):
            try:
                return fn()
            except (WriteConflict, DatabaseBusy) as exc:
                if attempt == attempts - 1:
                    raise Conflict("the database is busy with other claims; try again") from exc
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def migrate(self) -> None:
        upgrade(self.url)


def _first_line(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0][:200]


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "head")
