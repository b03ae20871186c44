"""The database handle: one SQLAlchemy engine on the data directory's SQLite file (the default)
or on PostgreSQL (`KILN_DATABASE_URL=postgresql://...`), opened at the latest schema version.

Every wait is bounded: connecting (`connect_timeout_s`), a statement and a lock
(`statement_timeout_s`), a connection from the pool, and SQLite's write lock (busy timeout).
A database that does not answer raises `ServiceUnavailableError` (`serviceUnavailable`, 503),
never hangs; connections are checked before use (`pool_pre_ping`), so the first call after
the database returns succeeds. Calls block: async code runs them on worker threads.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, Table, create_engine, event, exc, make_url, select
from sqlalchemy.dialects import postgresql, sqlite

from kiln.errors import ServiceUnavailableError
from kiln.settings import Settings
from kiln.storage.migrations import migrate

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
STATEMENT_TIMEOUT_S = 15.0
SQLITE_BUSY_TIMEOUT_S = 5.0  # how long a write waits for another process's write to end
POOL_SIZE = 8
_WRITE = "kiln_write"  # execution option: the transaction writes (SQLite: BEGIN IMMEDIATE)


def database_url(target: str | Path) -> URL:
    """The SQLAlchemy URL of `target`: a Path is an SQLite file; a string is a URL,
    `postgresql://` (psycopg 3) or `sqlite:///`. Raises ValueError for any other."""
    if isinstance(target, Path):
        return URL.create("sqlite", database=str(target))
    expected = "KILN_DATABASE_URL must be postgresql://USER:PASSWORD@HOST/DATABASE or sqlite:///PATH"
    try:
        url = make_url(target)
    except exc.ArgumentError:
        raise ValueError(f"{expected}; this one is not a URL") from None
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if url.drivername == "sqlite" and url.database not in (None, "", ":memory:"):
        return url
    raise ValueError(f"{expected}, not {url.render_as_string(hide_password=True)!r}")


class Database:
    """A thread-safe handle on one database, migrated to the latest schema when opened.

    `read()` and `write()` lend a connection for a few statements; a `write()` commits them
    together or not at all.
    """

    def __init__(
        self,
        target: str | Path,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    ) -> None:
        """Open `target` (see `database_url`; an SQLite file and its folder are created when
        missing) and apply the migrations it lacks. Raises `ServiceUnavailableError` when the
        database does not answer within `connect_timeout_s`."""
        url = database_url(target)
        self.dialect = "postgresql" if url.drivername.startswith("postgresql") else "sqlite"
        self.description = url.render_as_string(hide_password=True)
        self._closed = False
        # SQLite writers of this process queue here, each handed the lock the moment it is free,
        # rather than in SQLite's busy handler, whose sleeps (1, 2, 5, 10, 15, 20, 25 ms, ...)
        # spread a burst of requests' admissions out over tens of milliseconds.
        self._local_writer = threading.Lock() if self.dialect == "sqlite" else None
        self._write_wait_s = min(statement_timeout_s, SQLITE_BUSY_TIMEOUT_S)
        if self.dialect == "postgresql":
            self.engine = _postgresql_engine(url, connect_timeout_s, statement_timeout_s)
        else:
            Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
            self.engine = _sqlite_engine(url, min(statement_timeout_s, SQLITE_BUSY_TIMEOUT_S))
        try:
            with self.write() as conn:
                migrate(conn)
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def open(cls, settings: Settings) -> Database:
        """The database of `settings`: `database_url`, or the SQLite file in the data dir."""
        return cls(settings.database_url or settings.database_path)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for statements that only read."""
        with _unavailable_as_typed_error(), self._connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A connection in a transaction, committed when the block ends without an error.

        On SQLite the transaction takes the write lock at once (BEGIN IMMEDIATE), so
        read-then-write blocks are serialised across processes; this process's writers first
        queue on a lock of their own (`ServiceUnavailableError` after the statement timeout).
        """
        with self._writer_turn(), _unavailable_as_typed_error(), self._connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        if self._local_writer is None:
            yield
            return
        if not self._local_writer.acquire(timeout=self._write_wait_s):
            raise ServiceUnavailableError("Kiln's database is busy with other writes; retry in a moment.")
        try:
            yield
        finally:
            self._local_writer.release()

    def insert(self, table: Table) -> Any:
        """An INSERT into `table` with this dialect's `on_conflict_do_nothing` and
        `on_conflict_do_update`."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    def ping(self) -> None:
        """Raise `ServiceUnavailableError` unless the database answers now."""
        with self.read() as conn:
            conn.execute(select(1))

    def close(self) -> None:
        """Close every pooled connection; `read` and `write` raise `ServiceUnavailableError`
        afterwards."""
        self._closed = True
        self.engine.dispose()

    def _connect(self) -> Connection:
        if self._closed:
            raise ServiceUnavailableError("Kiln's database is closed: Kiln is shutting down.")
        return self.engine.connect()


@contextmanager
def _unavailable_as_typed_error() -> Iterator[None]:
    """Connection failures, timeouts and locks held too long as `ServiceUnavailableError`."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
        log.warning("database unavailable: %s", str(error).splitlines()[0])
        raise ServiceUnavailableError(
            "Kiln's database does not answer; retry in a moment.") from error


def _postgresql_engine(url: URL, connect_timeout_s: float, statement_timeout_s: float) -> Engine:
    timeout_ms = int(statement_timeout_s * 1000)
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=POOL_SIZE,
        pool_timeout=connect_timeout_s + statement_timeout_s,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": max(2, math.ceil(connect_timeout_s)),  # libpq: whole seconds, >= 2
            "options": f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}"
                       f" -c idle_in_transaction_session_timeout={4 * timeout_ms}",
            # a peer gone without a word (a cut network) is noticed within seconds, not hours
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": timeout_ms,
            "application_name": "kiln",
        },
    )


def _sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
    engine = create_engine(
        url, pool_size=POOL_SIZE, max_overflow=POOL_SIZE, pool_timeout=busy_timeout_s,
        connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # BEGIN is ours (below), not the driver's
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        # WAL + NORMAL: no fsync per commit (each cost ~10 ms here), still never corrupt;
        # a power cut may lose the last commits, not the database.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")

    return engine
