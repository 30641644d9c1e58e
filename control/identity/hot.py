"""Identity's hot path: the transactions every gateway request runs (token lookup, quota
check, commission issue and accept) as synchronous SQLAlchemy Core bodies.

In the API server on SQLite they run on one pysqlite connection on one thread
(archipelago.db.SerialSqlite, as the gateway's metadata does), each statement built once
and executed straight on the driver: the aiosqlite engine costs a thread hand-off per
statement, about 1.4 ms for a token lookup. Everywhere else (PostgreSQL, CLI commands,
before ``start``) the same bodies run through ``run_sync`` on the async engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from archipelago.db import EVENTS_KEY, Database, SerialSqlite
from control.host.events import EventBus, outbox
from control.host.plugin import Event

T = TypeVar("T")
#: id(statement) -> (SQL text, parameter names in order, compiled defaults, statement).
_COMPILED: dict[int, tuple[str, tuple[str, ...], dict[str, Any], Any]] = {}


def run(db: sa.Connection, stmt: Any, params: dict[str, Any]) -> Any:
    """Execute a statement built once at import: on pysqlite straight on the driver,
    compiled once (SQLAlchemy's per-call work costs more than the query), else through
    SQLAlchemy. Answers a cursor whose rows are indexed by position."""
    if db.dialect.driver != "pysqlite":
        return db.execute(stmt, params)
    hit = _COMPILED.get(id(stmt))
    if hit is None or hit[3] is not stmt:
        c = stmt.compile(dialect=db.dialect)
        hit = _COMPILED[id(stmt)] = (str(c), tuple(c.positiontup or ()), dict(c.params), stmt)
    sql, names, defaults = hit[0], hit[1], hit[2]
    raw = db.connection.driver_connection
    return raw.execute(sql, [params[n] if n in params else defaults[n] for n in names])


_OUTBOX = outbox.insert().values(id=sa.bindparam("e_id"), type=sa.bindparam("e_type"),
                                 payload=sa.bindparam("e_payload"),
                                 occurred_at=sa.bindparam("e_at"),
                                 delivered_at=sa.bindparam("e_done"))


def emit(db: sa.Connection, bus: EventBus, events: list[Event], event: Event) -> None:
    """EventBus.emit for a synchronous body: the outbox row in this transaction; ``event``
    joins ``events`` (delivered after the commit) when a handler wants it, else the row is
    written delivered (what delivering to no handler would do, without a second write)."""
    wanted = bus.wants(event.type)
    run(db, _OUTBOX, {"e_id": event.id, "e_type": event.type,
                      "e_payload": json.dumps(event.payload, sort_keys=True),
                      "e_at": event.occurred_at,
                      "e_done": None if wanted else event.occurred_at})
    if wanted:
        events.append(event)


#: A write body: ``fn(connection, events)``; it appends the events it emitted.
WriteBody = Callable[[sa.Connection, list[Event]], T]


class HotPath:
    """Runs identity's transaction bodies: on the serial SQLite thread once started (API
    server on SQLite), else through the async engine."""

    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db, self.bus = db, bus
        self._serial: SerialSqlite | None = None

    def start(self) -> None:
        """Use the serial thread from now on (SQLite files only)."""
        database = sa.engine.make_url(self.db.url).database or ""
        if self.db.is_sqlite and database not in ("", ":memory:") and self._serial is None:
            self._serial = SerialSqlite(self.db.url, self.db.what)

    async def stop(self) -> None:
        """Back to the async engine; close the serial connection and thread."""
        serial, self._serial = self._serial, None
        if serial is not None:
            await serial.close()

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """``fn(connection)`` in a read-only transaction."""
        if self._serial is not None:
            return await self._serial.run(fn, write=False)
        async with self.db.read() as conn:
            return await conn.run_sync(fn)

    async def write(self, fn: WriteBody[T]) -> T:
        """``fn(connection, events)`` in a write transaction; events delivered after it."""
        events: list[Event] = []
        if self._serial is not None:
            result = await self._serial.run(lambda c: fn(c, events), write=True)
            if events:
                await self.bus.deliver(events)
            return result
        async with self.db.begin() as conn:
            result = await conn.run_sync(lambda c: fn(c, events))
            conn.info[EVENTS_KEY].extend(events)  # Database.begin delivers them
        return result
