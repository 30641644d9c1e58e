"""The engine: usage histories folded into charges, exactly (fractions of credits).

A key's history is its events in (occurred, id) order. Between two events the key
holds a level (continuous) or a state (on/off); that interval is charged, cut at
month starts and price changes, each piece at the price in force at its start.
Discrete and credit events are charged once, at their time. An open interval (after
a key's last event) is charged only up to the end the caller asks for.

:func:`fold` computes charges over a window from scratch (replay, bills); the
:class:`Ledger` keeps running totals as events arrive, in any order and with
duplicates. Both go through :func:`advance`, so they agree exactly.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from itertools import pairwise

from control.billing.events import UsageEvent
from control.billing.periods import micros, month_cuts, month_name
from control.billing.prices import PriceTable
from control.billing.resources import DESTROYED, RESOURCES, STATE_NAMES, Policy

Key = tuple[str, str, str]
ZERO = Fraction(0)


@dataclass(frozen=True, order=True)
class LineKey:
    """Where a charge lands: one key, one state (on/off resources), one month."""

    user: str
    resource: str
    instance: str
    state: str
    month: str


@dataclass(frozen=True)
class Charge:
    """A quantity in base units (byte·µs, µs, bytes, counts) and its exact credits."""

    quantity: Fraction = ZERO
    credits: Fraction = ZERO

    def __add__(self, other: Charge) -> Charge:
        return Charge(self.quantity + other.quantity, self.credits + other.credits)

    def __bool__(self) -> bool:
        return bool(self.quantity or self.credits)


Totals = dict[LineKey, Charge]


@dataclass
class KeyState:
    """What a key holds after its last applied event."""

    last: tuple[datetime, str] | None = None  # (occurred, id) of that event
    level: Fraction = ZERO                    # continuous level, or on/off state code
    project: str = ""

    @property
    def time(self) -> datetime | None:
        """When the last applied event occurred (None: no event yet)."""
        return self.last[0] if self.last else None


def add_charge(out: Totals, line: LineKey, charge: Charge) -> None:
    """Accumulate ``charge`` into ``out[line]`` (zero charges are not stored)."""
    if charge:
        out[line] = out.get(line, Charge()) + charge


def _interval(key: Key, st: KeyState, a: datetime, b: datetime, prices: PriceTable,
              out: Totals) -> None:
    user, name, instance = key
    policy = RESOURCES[name].policy
    if a >= b:
        return
    if policy is Policy.CONTINUOUS:
        if not st.level:
            return
        state = ""
    elif policy is Policy.ONOFF:
        if st.level == DESTROYED:
            return
        state = STATE_NAMES[int(st.level)]
    else:
        return
    points = [a, *sorted(set(month_cuts(a, b)) | set(prices.cuts(name, state, st.project, a, b))), b]
    for x, y in pairwise(points):
        span = micros(y - x)
        quantity = st.level * span if policy is Policy.CONTINUOUS else Fraction(span)
        price = prices.at(name, state, st.project, x)
        credits = quantity * Fraction(price.price) / price.unit.factor if price else ZERO
        add_charge(out, LineKey(user, name, instance, state, month_name(x)), Charge(quantity, credits))


def _once(ev: UsageEvent, prices: PriceTable, out: Totals) -> None:
    policy = RESOURCES[ev.resource].policy
    quantity = Fraction(ev.value)
    if policy is Policy.CREDIT:
        credits = -quantity
    else:
        price = prices.at(ev.resource, "", ev.project, ev.occurred)
        credits = quantity * Fraction(price.price) / price.unit.factor if price else ZERO
    add_charge(out, LineKey(ev.user, ev.resource, ev.instance, "", month_name(ev.occurred)),
               Charge(quantity, credits))


def _clip(a: datetime, b: datetime, start: datetime | None, end: datetime | None) \
        -> tuple[datetime, datetime]:
    return (max(a, start) if start else a), (min(b, end) if end else b)


def advance(st: KeyState, ev: UsageEvent, prices: PriceTable, out: Totals,
            start: datetime | None = None, end: datetime | None = None) -> None:
    """Apply ``ev`` (later than ``st.last``) to ``st``: charge the interval it closes and
    its own one-off value, both only inside [start, end)."""
    if st.last is not None:
        _interval(ev.key, st, *_clip(st.last[0], ev.occurred, start, end), prices, out)
    policy = RESOURCES[ev.resource].policy
    if policy is Policy.CONTINUOUS:
        st.level = Fraction(ev.value) if ev.absolute else st.level + Fraction(ev.value)
    elif policy is Policy.ONOFF:
        st.level = Fraction(ev.value)
    elif (start is None or ev.occurred >= start) and (end is None or ev.occurred < end):
        _once(ev, prices, out)
    st.project = ev.project
    st.last = ev.order


def tail(key: Key, st: KeyState, end: datetime, prices: PriceTable, out: Totals,
         start: datetime | None = None) -> None:
    """Charge the open interval of ``key`` (after its last event) up to ``end``."""
    if st.last is not None:
        _interval(key, st, *_clip(st.last[0], end, start, end), prices, out)


def unique(events: Iterable[UsageEvent]) -> list[UsageEvent]:
    """The first event of each id, in delivery order (later copies are duplicates)."""
    seen: dict[str, UsageEvent] = {}
    for ev in events:
        seen.setdefault(ev.id, ev)
    return list(seen.values())


def fold(events: Iterable[UsageEvent], prices: PriceTable, start: datetime | None = None,
         end: datetime | None = None) -> Totals:
    """Charges inside [start, end) from scratch; with an ``end``, open intervals run up to it."""
    histories: dict[Key, list[UsageEvent]] = {}
    for ev in sorted(unique(events), key=lambda e: e.order):
        histories.setdefault(ev.key, []).append(ev)
    out: Totals = {}
    for key, history in histories.items():
        st = KeyState()
        for ev in history:
            if end is not None and ev.occurred >= end:
                break
            advance(st, ev, prices, out, start, end)
        if end is not None:
            tail(key, st, end, prices, out, start)
    return out


def replay(events: Iterable[UsageEvent], prices: PriceTable) -> Ledger:
    """A fresh ledger fed the whole log in order (what running totals must equal)."""
    led = Ledger(prices)
    for ev in sorted(unique(events), key=lambda e: e.order):
        led.record(ev)
    return led


def flatten(closed: dict[Key, Totals]) -> Totals:
    """One Totals out of per-key totals."""
    out: Totals = {}
    for per_key in closed.values():
        for line, charge in per_key.items():
            add_charge(out, line, charge)
    return out


def credits_of(totals: Totals, user: str | None = None) -> Fraction:
    """Sum of credits charged (credits added count negative), optionally for one user."""
    return sum((c.credits for k, c in totals.items() if user is None or k.user == user), ZERO)


@dataclass
class Ledger:
    """Running totals: events recorded as they arrive (any order, duplicates ignored).

    ``closed`` holds, per key, the charges up to its last event; open intervals are
    added when asked (:meth:`totals`, :meth:`balance`).
    """

    prices: PriceTable
    ids: set[str] = field(default_factory=set)
    history: dict[Key, list[UsageEvent]] = field(default_factory=dict)
    states: dict[Key, KeyState] = field(default_factory=dict)
    closed: dict[Key, Totals] = field(default_factory=dict)
    refolds: int = 0

    def record(self, ev: UsageEvent) -> bool:
        """Take one event; False for a duplicate id. A late event re-folds its key."""
        if ev.id in self.ids:
            return False
        self.ids.add(ev.id)
        history = self.history.setdefault(ev.key, [])
        st = self.states.setdefault(ev.key, KeyState())
        if st.last is None or ev.order > st.last:
            history.append(ev)
            advance(st, ev, self.prices, self.closed.setdefault(ev.key, {}))
        else:
            bisect.insort(history, ev, key=lambda e: e.order)
            self.refold(ev.key)
        return True

    def refold(self, key: Key) -> None:
        """Recompute one key's state and closed charges from its history."""
        self.refolds += 1
        st, out = KeyState(), {}
        for ev in self.history[key]:
            advance(st, ev, self.prices, out)
        self.states[key], self.closed[key] = st, out

    def totals(self, end: datetime | None = None, user: str | None = None) -> Totals:
        """Closed charges plus open intervals up to ``end`` (None: closed only)."""
        out: Totals = {}
        for key, closed in self.closed.items():
            if user is not None and key[0] != user:
                continue
            for line, charge in closed.items():
                add_charge(out, line, charge)
            st = self.states[key]
            if end is not None and st.time is not None and st.time < end:
                tail(key, st, end, self.prices, out)
        return out

    def balance(self, user: str, at: datetime) -> Fraction:
        """Credits added minus charges of ``user``, open intervals charged up to ``at``."""
        return -credits_of(self.totals(at, user))
