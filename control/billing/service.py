"""The billing service layer: prices, credits, balances, bills, usage, events, replay.

Plain async Python over the control database, used by the HTTP API, the CLI and the
event handlers alike. Bills and usage are folded from the event log (exact); balances
come from the running totals (cheap) plus open intervals; `replay` checks one against
the other.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from archipelago.errors import InvalidArgument
from control.billing import store
from control.billing import tables as t
from control.billing.bill import Bill, Line, make_bill, make_lines, rounded
from control.billing.events import UsageEvent
from control.billing.ledger import ZERO, Totals, credits_of, flatten, fold, replay, tail
from control.billing.periods import month_name, parse_month, to_micros, utc
from control.billing.prices import Price, make_price, parse_amount
from control.billing.resources import Policy, resource


def utcnow() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


@dataclass
class Period:
    """The window of a bill: one month, ended early at ``end`` for the current month."""

    month: str
    start: datetime
    end: datetime


@dataclass
class ReplayReport:
    """What a replay found: events, keys, and the (user, month) bills that differ."""

    events: int = 0
    keys: int = 0
    differences: list[dict[str, Any]] = field(default_factory=list)
    rewritten: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"events": self.events, "keys": self.keys, "differences": self.differences,
                "ok": not self.differences, "rewritten": self.rewritten}


class BillingService:
    """Billing over a Database (``begin()``/``read()`` transactions)."""

    def __init__(self, db: Any, now: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.now = now

    # prices ---------------------------------------------------------------------------
    async def set_price(self, name: str, amount: str | Decimal, unit: str | None = None,
                        start: datetime | None = None, state: str = "", project: str = "") -> Price:
        """Add a price version from ``start`` (default now); never retroactive."""
        now = self.now()
        effective = utc(start) if start is not None else now
        if effective < now:
            raise InvalidArgument(f"prices are never retroactive: {effective.isoformat()} is in the "
                                  f"past (now {now.isoformat()}); give a time from now on")
        price = make_price(name, amount, unit, effective, state, project)
        p = t.prices.c
        async with self.db.begin() as conn:
            await conn.execute(t.prices.delete().where(
                p.resource == price.resource, p.state == price.state, p.project == price.project,
                p.effective_us == to_micros(price.effective)))
            await conn.execute(t.prices.insert().values(
                resource=price.resource, state=price.state, project=price.project,
                effective_us=to_micros(price.effective), price=str(price.price), unit=price.unit.name,
                set_us=to_micros(now)))
        return price

    async def prices(self) -> list[Price]:
        """Every price version, by resource, state, project and time."""
        async with self.db.read() as conn:
            return list(await store.load_prices(conn))

    # events ---------------------------------------------------------------------------
    async def record(self, events: list[UsageEvent], conn: Any = None) -> int:
        """Record usage events (in ``conn``'s transaction, or a new one); how many were new."""
        received = to_micros(self.now())
        if conn is not None:
            return await store.record_all(conn, events, received)
        async with self.db.begin() as conn:
            return await store.record_all(conn, events, received)

    def credit_event(self, user: str, amount: str | Decimal, by: str = "",
                     event_id: str | None = None) -> UsageEvent:
        """The usage event of ``amount`` credits added to ``user`` (validated)."""
        value = parse_amount(amount)
        return UsageEvent(id=event_id or uuid.uuid4().hex, user=user, resource="billing.credit",
                          value=value, occurred=self.now(), type="billing.credit",
                          details={"by": by} if by else {})

    async def events(self, user: str, start: datetime | None = None, end: datetime | None = None,
                     limit: int = 1000) -> list[UsageEvent]:
        """The user's events in [start, end), oldest first, at most ``limit``."""
        c = t.events.c
        where = [c.user_id == user]
        if start is not None:
            where.append(c.occurred_us >= to_micros(start))
        if end is not None:
            where.append(c.occurred_us < to_micros(end))
        async with self.db.read() as conn:
            found = await store.select_events(conn, *where)
        return found[:limit]

    # bills ----------------------------------------------------------------------------
    def period(self, month: str | None = None, until: datetime | None = None) -> Period:
        """The bill window: ``month`` (default: the month of ``until``, or now) up to ``until``
        (default now) or the month's end, whichever comes first."""
        now = self.now()
        if until is not None:
            until = utc(until)
        ref = until if until is not None else now
        name = month or month_name(ref)
        start, end = parse_month(name)
        if until is None and now <= start:
            raise InvalidArgument(f"month {name} has not begun (now {now.isoformat()})")
        stop = until if until is not None else now
        if stop <= start:
            raise InvalidArgument(f"--until {stop.isoformat()} is not after the start of {name}")
        return Period(name, start, min(end, stop))

    async def _fold_user(self, user: str, start: datetime, end: datetime) -> Totals:
        c = t.events.c
        async with self.db.read() as conn:
            prices = await store.load_prices(conn)
            evs = await store.select_events(conn, c.user_id == user, c.occurred_us < to_micros(end))
        return fold(evs, prices, start, end)

    async def bill(self, user: str, month: str | None = None, until: datetime | None = None) -> Bill:
        """The user's bill of a month, folded from the event log (open intervals up to its end)."""
        p = self.period(month, until)
        return make_bill(await self._fold_user(user, p.start, p.end), user, p.start, p.end, p.month)

    async def usage(self, user: str, month: str | None = None,
                    until: datetime | None = None) -> tuple[Period, list[Line]]:
        """Per resource and instance lines of a month (same figures as the bill, finer)."""
        p = self.period(month, until)
        lines, _ = make_lines(await self._fold_user(user, p.start, p.end), user, per_instance=True)
        return p, lines

    async def daily(self, user: str, month: str | None = None, until: datetime | None = None
                    ) -> tuple[Period, list[datetime], dict[str, list[Fraction]]]:
        """Cumulative credits per resource at each day's end of a month (for the chart)."""
        p = self.period(month, until)
        c = t.events.c
        async with self.db.read() as conn:
            prices = await store.load_prices(conn)
            evs = await store.select_events(conn, c.user_id == user, c.occurred_us < to_micros(p.end))
        days, cursor = [], p.start
        while cursor < p.end:
            cursor = min(datetime.fromordinal(cursor.toordinal() + 1).replace(tzinfo=UTC), p.end)
            days.append(cursor)
        series: dict[str, list[Fraction]] = {}
        prev = p.start
        for i, day in enumerate(days):
            for line, charge in fold(evs, prices, prev, day).items():
                if resource(line.resource).policy is Policy.CREDIT:
                    continue
                series.setdefault(line.resource, [ZERO] * len(days))[i] += charge.credits
            prev = day
        for values in series.values():
            for i in range(1, len(values)):
                values[i] += values[i - 1]
        return p, days, series

    # balance --------------------------------------------------------------------------
    async def balance(self, user: str, at: datetime | None = None) -> Fraction:
        """Credits added minus charges, from the running totals, open intervals up to ``at``."""
        at = utc(at) if at is not None else self.now()
        async with self.db.read() as conn:
            prices = await store.load_prices(conn)
            states, closed = await store.stored(conn, user)
        out = dict(closed)
        for key, st in states.items():
            if st.time is not None and st.time < at:
                tail(key, st, at, prices, out)
        return -credits_of(out, user)

    async def balance_dict(self, user: str, at: datetime | None = None) -> dict[str, Any]:
        """Aquarium's ``GET /user/<id>/balance`` shape."""
        return {"userId": user, "balance": str(rounded(await self.balance(user, at)))}

    # replay ---------------------------------------------------------------------------
    async def replay(self, check: bool = True) -> ReplayReport:
        """Fold the whole log from scratch and compare with the running totals per (user, month);
        without ``check``, also replace the running state with the replay's."""
        async with (self.db.read() if check else self.db.begin()) as conn:
            prices = await store.load_prices(conn)
            evs = await store.select_events(conn)
            fresh = replay(evs, prices)
            states, running = await store.stored(conn)
            expected = flatten(fresh.closed)
            report = ReplayReport(events=len(evs), keys=len(fresh.states))
            report.differences = _differences(running, expected)
            if states != {k: s for k, s in fresh.states.items() if s.last is not None}:
                report.differences.append({"state": "differs"})
            if not check and report.differences:
                await store.rewrite(conn, fresh.states, expected)
                report.rewritten = True
        return report


def _per_bill(totals: Totals) -> dict[tuple[str, str], Fraction]:
    out: dict[tuple[str, str], Fraction] = {}
    for line, charge in totals.items():
        k = (line.user, line.month)
        out[k] = out.get(k, ZERO) + charge.credits
    return out


def _differences(running: Totals, expected: Totals) -> list[dict[str, Any]]:
    diffs = []
    if running == expected:
        return diffs
    users_months = sorted({(k.user, k.month) for k in [*running, *expected]
                           if running.get(k) != expected.get(k)})
    r, e = _per_bill(running), _per_bill(expected)
    for user, month in users_months:
        diffs.append({"user": user, "month": month, "running": str(rounded(r.get((user, month), ZERO))),
                      "replayed": str(rounded(e.get((user, month), ZERO)))})
    return diffs
