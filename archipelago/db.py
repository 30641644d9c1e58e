"""The metadata databases (the gateway's, the control plane's): one SQLAlchemy 2 Core async
engine from a URL ([database] url).

SQLite (the embedded default, a file 0600 in WAL mode) and PostgreSQL
(``postgresql+asyncpg://...``, several hosts) differ only in the URL. On SQLite every write
transaction starts with BEGIN IMMEDIATE: writers queue on the database lock instead of
failing when a read snapshot cannot be upgraded, across processes too (CLI + server).
On PostgreSQL connections are pre-pinged when taken from the pool, so a restarted server
costs the requests of its outage (BackendUnavailable: 503) and nothing after.

Rule for callers: never open a transaction while holding another one of the same
Database (on SQLite the second waits for the first's lock: a deadlock until busy_timeout).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from archipelago.errors import BackendUnavailable, ConfigError, NoSpace

log = logging.getLogger("archipelago.db")
#: conn.info key of the events emitted in a transaction (delivered after its commit).
EVENTS_KEY = "archip.events"
#: Seconds a SQLite writer waits for the database lock.
BUSY_TIMEOUT = 30.0

AfterCommit = Callable[[list[Any]], Awaitable[None]]
T = TypeVar("T")


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The aiosqlite URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


class Database:
    """The async engine plus transactions that deliver their events after commit."""

    def __init__(self, url: str, what: str = "database", pool_size: int = 5) -> None:
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError as e:
            raise ConfigError(f"bad database URL {url!r}: {e}") from None
        self.url = url
        self.what = what
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = parsed.database or ""
            if path and path != ":memory:":
                _create_private(Path(path))
            kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT}
        else:
            # A connection the server dropped (restart, failover) is replaced on checkout.
            # READ COMMITTED (PostgreSQL's default, made explicit): a statement after a lock
            # wait sees what the lock holder committed (docs/metadata.md relies on it).
            kwargs.update(pool_pre_ping=True, pool_size=pool_size, max_overflow=2 * pool_size,
                          pool_timeout=BUSY_TIMEOUT, isolation_level="READ COMMITTED")
        try:
            self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        except (ImportError, sa.exc.ArgumentError) as e:
            raise ConfigError(f"cannot use database URL {parsed.render_as_string()}: {e}") from None
        if self.is_sqlite:
            _sqlite_setup(self.engine.sync_engine)
        self._after_commit: list[AfterCommit] = []

    def after_commit(self, callback: AfterCommit) -> None:
        """Call ``callback(events)`` after each transaction that emitted events commits."""
        self._after_commit.append(callback)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: commits on exit, rolls back on error, then delivers events."""
        with self._errors():
            async with self.engine.begin() as conn:
                conn.info[EVENTS_KEY] = []
                try:
                    yield conn
                    events = list(conn.info[EVENTS_KEY])
                finally:
                    conn.info.pop(EVENTS_KEY, None)
        if events:
            for cb in self._after_commit:
                await cb(events)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a plain deferred BEGIN on SQLite: no writer lock; on
        PostgreSQL autocommit statements: at READ COMMITTED each statement of a
        transaction takes its own snapshot anyway, so BEGIN and COMMIT would only cost
        two round trips)."""
        with self._errors():
            async with self.engine.connect() as conn:
                if self.is_sqlite:
                    conn = await conn.execution_options(archip_read=True)
                else:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                async with conn.begin():
                    yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Driver and connection failures as the archipelago error hierarchy."""
        try:
            yield
        except (DBAPIError, OSError) as e:
            err = self._failed(e)
            if err is None:
                raise
            raise err from e
        except Exception as e:
            # The driver's own error at connect time ("the database system is starting
            # up"), which SQLAlchemy does not wrap.
            if not _pg_unavailable(e):
                raise
            raise BackendUnavailable(f"{self.what} unavailable: {e}") from e

    async def run_sync(self, fn: Callable[[sa.Connection], Any]) -> Any:
        """Run ``fn(sync_connection)`` in a write transaction (Alembic, bulk admin work)."""
        async with self.begin() as conn:
            return await conn.run_sync(fn)

    async def close(self) -> None:
        """Dispose of the engine's connections."""
        await self.engine.dispose()

    def _failed(self, e: DBAPIError | OSError) -> Exception | None:
        return translate(e, self.what, self.url)


def translate(e: DBAPIError | OSError, what: str, url: str) -> Exception | None:
    """The hierarchy's error for a failed transaction: NoSpace for a full disk,
    BackendUnavailable for a lost or refused connection; None for anything else (a bug,
    a constraint: re-raised unchanged)."""
    if isinstance(e, OSError):
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return NoSpace(f"the {what}: {e.strerror}")
        log.warning("%s unreachable: %s", what, e)
        return BackendUnavailable(f"{what} unavailable: {e}")
    orig = e.orig
    if url.startswith("sqlite") and _sqlite_full(orig, url):
        return NoSpace(f"the {what}: {orig}")
    if isinstance(e, OperationalError | InterfaceError) or e.connection_invalidated or \
            _pg_unavailable(orig) or _pg_unavailable(e):
        log.warning("%s error: %s", what, orig)
        return BackendUnavailable(f"{what} unavailable: {orig}")
    return None


def _sqlite_full(orig: BaseException | None, url: str) -> bool:
    """True when a SQLite error means the disk holding the database is full."""
    if getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    # Growing the WAL index fails as an I/O error on a full disk.
    if not isinstance(orig, sqlite3.OperationalError):
        return False
    path = sa.engine.make_url(url).database or ""
    if not path or path == ":memory:":
        return False
    try:
        return os.statvfs(os.path.dirname(os.path.abspath(path))).f_bavail == 0
    except OSError:
        return False


def _pg_unavailable(orig: BaseException | None) -> bool:
    """True for PostgreSQL's "come back later" states (starting up, shutting down)."""
    # SQLSTATE class 08 (connection exception), 57P01-57P03 (admin shutdown, crash
    # shutdown, cannot connect now), 53300 (too many connections).
    # The driver's exception may sit behind SQLAlchemy's adapter: follow the causes.
    seen = 0
    while orig is not None and seen < 5:
        if isinstance(orig, sa.exc.PendingRollbackError):
            return True  # the connection broke mid-transaction (reported again on reuse)
        state = str(getattr(orig, "sqlstate", "") or getattr(orig, "pgcode", "") or "")
        if state.startswith("08") or state.startswith("57P") or state == "53300":
            return True
        # asyncpg's client-side errors of a connection that broke mid-operation
        # (ConnectionDoesNotExistError, "another operation is in progress").
        if type(orig).__module__.startswith("asyncpg") and type(orig).__name__ in (
                "InterfaceError", "InternalClientError", "ConnectionDoesNotExistError"):
            return True
        orig, seen = orig.__cause__ or orig.__context__, seen + 1
    return False


def _create_private(path: Path) -> None:
    """Create the SQLite file 0600 before the driver does (it holds password and token hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _sqlite_setup(sync: sa.Engine, raw_begin: bool = False) -> None:
    """WAL, busy timeout, and BEGIN / BEGIN IMMEDIATE emitted by us (``raw_begin``: on the
    pysqlite connection itself, skipping SQLAlchemy's statement machinery)."""

    @event.listens_for(sync, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver: the "begin" hook below emits BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        cur.close()

    @event.listens_for(sync, "begin")
    def _begin(conn: sa.Connection) -> None:
        read = conn.get_execution_options().get("archip_read", False)
        sql = "BEGIN" if read else "BEGIN IMMEDIATE"
        if raw_begin:
            conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
        else:
            conn.exec_driver_sql(sql)


class SerialSqlite:
    """One SQLite connection on one worker thread (pysqlite, no per-statement hand-off):
    the fast path of a single host's metadata. Calls run one at a time, each in its own
    transaction (BEGIN IMMEDIATE for writes, as in Database)."""

    def __init__(self, url: str, what: str = "database") -> None:
        parsed = sa.engine.make_url(url).set(drivername="sqlite")
        self.url, self.what = url, what
        path = parsed.database or ""
        if path and path != ":memory:":
            _create_private(Path(path))
        self.engine = sa.create_engine(parsed, poolclass=sa.pool.StaticPool, connect_args={
            "timeout": BUSY_TIMEOUT, "check_same_thread": False})
        _sqlite_setup(self.engine, raw_begin=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sa.Connection | None = None

    async def run(self, fn: Callable[[sa.Connection], T], write: bool) -> T:
        """``fn(connection)`` in one transaction on the worker thread."""
        def txn() -> T:
            if self._conn is None:
                self._conn = self.engine.connect()
            conn = self._conn.execution_options(archip_read=not write)
            with conn.begin():
                return fn(conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, txn)
        except (DBAPIError, OSError) as e:
            err = translate(e, self.what, self.url)
            if err is None:
                raise
            raise err from e
        except sqlite3.OperationalError as e:  # the raw BEGIN: locked, or a full disk
            if _sqlite_full(e, self.url):
                raise NoSpace(f"the {self.what}: {e}") from e
            raise BackendUnavailable(f"{self.what} unavailable: {e}") from e

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self.engine.dispose()

        await asyncio.get_running_loop().run_in_executor(self._pool, shut)
        self._pool.shutdown(wait=True)
