"""The event bus: ``emit`` writes the event to the outbox inside the caller's transaction;
after that transaction commits, the bus delivers it to every enabled plugin's handler for
its type, at least once (handlers are idempotent by event id). Rows left undelivered (a
crash between commit and delivery, a failing handler) are delivered again by
``deliver_pending`` (on API-server start and then periodically)."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from archipelago.errors import InvalidArgument
from control.host.db import EVENTS_KEY, Database
from control.host.plugin import Event, Handler

log = logging.getLogger("control.events")

metadata = sa.MetaData()
outbox = sa.Table(
    "host_outbox", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("occurred_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.Index("host_outbox_pending", "delivered_at"),
)


class EventBus:
    """Outbox writes and after-commit delivery to the registered handlers."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._handlers: dict[str, list[tuple[str, Handler]]] = defaultdict(list)
        db.after_commit(self.deliver)
        #: Deliveries that raised (for status pages and tests).
        self.failures = 0

    def subscribe(self, owner: str, event_type: str, handler: Handler) -> None:
        """Call ``handler`` for every committed event of ``event_type``."""
        self._handlers[event_type].append((owner, handler))

    def wants(self, event_type: str) -> bool:
        """True when some handler subscribes to ``event_type``."""
        return bool(self._handlers.get(event_type))

    async def emit(self, conn: AsyncConnection, event: Event) -> None:
        """Write ``event`` to the outbox in ``conn``'s transaction (from Database.begin())."""
        if EVENTS_KEY not in conn.info:
            raise InvalidArgument("emit() needs a transaction from Database.begin()")
        try:
            payload = json.dumps(event.payload, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"event {event.type} payload is not JSON: {e}") from None
        await conn.execute(outbox.insert().values(
            id=event.id, type=event.type, payload=payload, occurred_at=event.occurred_at))
        conn.info[EVENTS_KEY].append(event)

    async def deliver(self, events: list[Event]) -> None:
        """Hand committed events to their handlers; mark the fully handled ones delivered."""
        done = []
        for ev in events:
            ok = True
            for owner, handler in self._handlers.get(ev.type, []):
                try:
                    await handler(ev)
                except Exception:  # noqa: BLE001 -- one handler must not stop the others
                    ok = False
                    self.failures += 1
                    log.exception("handler of %s in plugin %s failed on event %s (kept for "
                                  "redelivery)", ev.type, owner, ev.id)
            if ok:
                done.append(ev.id)
        if done:
            async with self.db.begin() as conn:
                await conn.execute(outbox.update().where(outbox.c.id.in_(done))
                                   .values(delivered_at=time.time()))

    async def deliver_pending(self, limit: int = 1000) -> int:
        """Deliver outbox rows never marked delivered (oldest first); returns how many."""
        async with self.db.read() as conn:
            rows = (await conn.execute(
                sa.select(outbox.c.id, outbox.c.type, outbox.c.payload, outbox.c.occurred_at)
                .where(outbox.c.delivered_at.is_(None)).order_by(outbox.c.seq).limit(limit)
            )).all()
        events = [Event(type=r.type, payload=json.loads(r.payload), id=r.id,
                        occurred_at=r.occurred_at) for r in rows]
        if events:
            await self.deliver(events)
        return len(events)

    async def pending(self) -> int:
        """How many outbox rows wait for delivery."""
        async with self.db.read() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(outbox)
                                           .where(outbox.c.delivered_at.is_(None)))).scalar_one())
