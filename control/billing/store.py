"""Running totals in the database: the event log, key states and totals, kept by the engine.

:func:`record` is called inside the caller's write transaction (so an event is stored
with whatever caused it, or not at all): a duplicate id changes nothing, an event later
than its key's last one advances the key, an earlier one re-folds the key from its log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control.billing import tables as t
from control.billing.events import UsageEvent
from control.billing.ledger import Charge, Key, KeyState, LineKey, Totals, add_charge, advance
from control.billing.periods import from_micros, to_micros
from control.billing.prices import Price, PriceTable
from control.billing.resources import resource
from control.billing.units import parse_unit


def _insert_ignore(conn: AsyncConnection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


async def load_prices(conn: AsyncConnection) -> PriceTable:
    """Every price version."""
    rows = (await conn.execute(sa.select(t.prices))).all()
    return PriceTable(Price(r.resource, Decimal(r.price), parse_unit(resource(r.resource), r.unit),
                            from_micros(r.effective_us), r.state, r.project) for r in rows)


def event_of(row: Any) -> UsageEvent:
    """A UsageEvent from a billing_events row."""
    return UsageEvent(id=row.id, user=row.user_id, resource=row.resource, value=Decimal(row.value),
                      occurred=from_micros(row.occurred_us), instance=row.instance,
                      project=row.project, absolute=row.absolute, type=row.type,
                      details=json.loads(row.details))


async def select_events(conn: AsyncConnection, *where: Any) -> list[UsageEvent]:
    """Events matching ``where``, in (occurred, id) order (sorted here, not by SQL collation)."""
    rows = (await conn.execute(sa.select(t.events).where(*where))).all()
    return sorted((event_of(r) for r in rows), key=lambda e: e.order)


async def _state(conn: AsyncConnection, key: Key) -> KeyState | None:
    s = t.state.c
    # FOR UPDATE: PostgreSQL serialises writers of one key here (SQLite's BEGIN IMMEDIATE
    # already does); two first events of a new key collide on the insert instead, and the
    # loser's event is redelivered.
    row = (await conn.execute(sa.select(t.state).where(
        s.user_id == key[0], s.resource == key[1], s.instance == key[2]).with_for_update())).first()
    return None if row is None else _state_of(row)


def _state_of(row: Any) -> KeyState:
    return KeyState((from_micros(row.last_us), row.last_id), Fraction(row.level), row.project)


async def _save_state(conn: AsyncConnection, key: Key, st: KeyState, new: bool) -> None:
    assert st.last is not None
    values = dict(last_us=to_micros(st.last[0]), last_id=st.last[1], level=str(st.level),
                  project=st.project)
    s = t.state.c
    if new:
        await conn.execute(t.state.insert().values(user_id=key[0], resource=key[1],
                                                   instance=key[2], **values))
    else:
        await conn.execute(t.state.update().where(
            s.user_id == key[0], s.resource == key[1], s.instance == key[2]).values(**values))


def _line_where(line: LineKey) -> list[Any]:
    c = t.totals.c
    return [c.user_id == line.user, c.resource == line.resource, c.instance == line.instance,
            c.state == line.state, c.month == line.month]


async def _add_totals(conn: AsyncConnection, out: Totals) -> None:
    for line, charge in out.items():
        row = (await conn.execute(sa.select(t.totals).where(*_line_where(line)).with_for_update())).first()
        if row is None:
            await conn.execute(t.totals.insert().values(
                user_id=line.user, resource=line.resource, instance=line.instance, state=line.state,
                month=line.month, quantity=str(charge.quantity), credits=str(charge.credits)))
        else:
            total = Charge(Fraction(row.quantity), Fraction(row.credits)) + charge
            await conn.execute(t.totals.update().where(*_line_where(line)).values(
                quantity=str(total.quantity), credits=str(total.credits)))


async def refold(conn: AsyncConnection, key: Key, prices: PriceTable) -> None:
    """Recompute one key's state and totals from its events."""
    c = t.events.c
    st, out = KeyState(), {}
    for ev in await select_events(conn, c.user_id == key[0], c.resource == key[1],
                                  c.instance == key[2]):
        advance(st, ev, prices, out)
    tc = t.totals.c
    await conn.execute(t.totals.delete().where(tc.user_id == key[0], tc.resource == key[1],
                                               tc.instance == key[2]))
    await _add_totals(conn, out)
    sc = t.state.c
    await conn.execute(t.state.delete().where(sc.user_id == key[0], sc.resource == key[1],
                                              sc.instance == key[2]))
    if st.last is not None:
        await _save_state(conn, key, st, new=True)


async def record(conn: AsyncConnection, ev: UsageEvent, received_us: int,
                 prices: PriceTable | None = None) -> bool:
    """Store ``ev`` and update the running totals; False (nothing changed) for a known id."""
    res = await conn.execute(_insert_ignore(conn, t.events).values(
        id=ev.id, type=ev.type, user_id=ev.user, resource=ev.resource, instance=ev.instance,
        project=ev.project, value=str(ev.value), absolute=ev.absolute,
        occurred_us=to_micros(ev.occurred), received_us=received_us,
        details=json.dumps(dict(ev.details), sort_keys=True, default=str)))
    if res.rowcount == 0:
        return False
    prices = prices if prices is not None else await load_prices(conn)
    st = await _state(conn, ev.key)
    if st is None or (st.last is not None and ev.order > st.last):
        new = st is None
        st = st or KeyState()
        out: Totals = {}
        advance(st, ev, prices, out)
        await _add_totals(conn, out)
        await _save_state(conn, ev.key, st, new)
    else:
        await refold(conn, ev.key, prices)
    return True


async def record_all(conn: AsyncConnection, evs: Iterable[UsageEvent], received_us: int) -> int:
    """Record several events in one transaction; how many were new."""
    prices = await load_prices(conn)
    return sum([await record(conn, ev, received_us, prices) for ev in evs])


async def stored(conn: AsyncConnection, user: str | None = None) -> tuple[dict[Key, KeyState], Totals]:
    """The running states and totals (of one user, or all)."""
    sw = [t.state.c.user_id == user] if user is not None else []
    tw = [t.totals.c.user_id == user] if user is not None else []
    states = {(r.user_id, r.resource, r.instance): _state_of(r)
              for r in (await conn.execute(sa.select(t.state).where(*sw))).all()}
    out: Totals = {}
    for r in (await conn.execute(sa.select(t.totals).where(*tw))).all():
        add_charge(out, LineKey(r.user_id, r.resource, r.instance, r.state, r.month),
                   Charge(Fraction(r.quantity), Fraction(r.credits)))
    return states, out


async def rewrite(conn: AsyncConnection, states: dict[Key, KeyState], out: Totals) -> None:
    """Replace every running state and total (after a replay)."""
    await conn.execute(t.totals.delete())
    await conn.execute(t.state.delete())
    await _add_totals(conn, out)
    for key, st in states.items():
        if st.last is not None:
            await _save_state(conn, key, st, new=True)
