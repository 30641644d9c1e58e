"""The control database: one SQLAlchemy 2 Core async engine from a URL.

SQLite (the default, ``sqlite+aiosqlite:///DATA_DIR/control.db``, file 0600, WAL) and
PostgreSQL (``postgresql+asyncpg://...``) differ only in the URL. On SQLite every write
transaction starts with BEGIN IMMEDIATE: writers queue on the database lock instead of
failing when a read snapshot cannot be upgraded, across processes too (CLI + server).

Rule for callers: never open a transaction while holding another one of the same
Database (on SQLite the second waits for the first's lock: a deadlock until busy_timeout).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from archipelago.errors import BackendUnavailable, ConfigError
from archipelago.instance import Instance

log = logging.getLogger("control.db")
#: conn.info key of the events emitted in a transaction (delivered after its commit).
EVENTS_KEY = "archip.events"
#: Seconds a SQLite writer waits for the database lock.
BUSY_TIMEOUT = 30.0

AfterCommit = Callable[[list[Any]], Awaitable[None]]


def default_url(inst: Instance) -> str:
    """sqlite+aiosqlite:///DATA_DIR/control.db."""
    return f"sqlite+aiosqlite:///{inst.data_dir / 'control.db'}"


def url_of(inst: Instance, configured: str) -> str:
    """[control] database, or the default SQLite file of the instance."""
    return configured or default_url(inst)


class Database:
    """The async engine plus transactions that deliver their events after commit."""

    def __init__(self, url: str) -> None:
        try:
            parsed = sa.engine.make_url(url)
        except sa.exc.ArgumentError as e:
            raise ConfigError(f"bad database URL {url!r}: {e}") from None
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            path = parsed.database or ""
            if path and path != ":memory:":
                _create_private(Path(path))
            kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT}
        try:
            self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        except (ImportError, sa.exc.ArgumentError) as e:
            raise ConfigError(f"cannot use database URL {parsed.render_as_string()}: {e}") from None
        if self.is_sqlite:
            _sqlite_setup(self.engine)
        self._after_commit: list[AfterCommit] = []

    def after_commit(self, callback: AfterCommit) -> None:
        """Call ``callback(events)`` after each transaction that emitted events commits."""
        self._after_commit.append(callback)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: commits on exit, rolls back on error, then delivers events."""
        try:
            async with self.engine.begin() as conn:
                conn.info[EVENTS_KEY] = []
                try:
                    yield conn
                    events = list(conn.info[EVENTS_KEY])
                finally:
                    conn.info.pop(EVENTS_KEY, None)
        except OperationalError as e:
            raise _unavailable(e) from e
        if events:
            for cb in self._after_commit:
                await cb(events)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a plain deferred BEGIN on SQLite: no writer lock)."""
        try:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(archip_read=True)
                async with conn.begin():
                    yield conn
        except OperationalError as e:
            raise _unavailable(e) from e

    async def run_sync(self, fn: Callable[[sa.Connection], Any]) -> Any:
        """Run ``fn(sync_connection)`` in a write transaction (Alembic, bulk admin work)."""
        async with self.begin() as conn:
            return await conn.run_sync(fn)

    async def close(self) -> None:
        """Dispose of the engine's connections."""
        await self.engine.dispose()


def _unavailable(e: DBAPIError) -> BackendUnavailable:
    log.warning("database error: %s", e.orig)
    return BackendUnavailable(f"control database unavailable: {e.orig}")


def _create_private(path: Path) -> None:
    """Create the SQLite file 0600 before the driver does (it holds password and token hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _sqlite_setup(engine: AsyncEngine) -> None:
    sync = engine.sync_engine

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
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")
