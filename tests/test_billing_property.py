"""Property tests of the billing engine (hypothesis).

For random usage histories delivered out of order (within a window) and with
duplicates: the running ledger equals a replay of the whole log from scratch, and
charges over [a, c) equal charges over [a, b) plus [b, c) for any b — exactly.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from billing_helpers import GiB, T, price, table
from hypothesis import given, settings
from hypothesis import strategies as st

from control.billing.events import UsageEvent
from control.billing.ledger import Ledger, Totals, add_charge, fold

BASE = T("2026-01-31 12:00")          # the window spans the February month start
SPAN_US = 3 * 86400 * 10**6
USERS = ("alice", "bob")
INSTANCES = ("i1", "i2")


def _when(draw) -> timedelta:
    # Coarse times collide often (ties broken by id); fine times hit odd microseconds.
    coarse = draw(st.booleans())
    us = draw(st.integers(0, 72)) * 3600 * 10**6 if coarse else draw(st.integers(0, SPAN_US))
    return timedelta(microseconds=us)


@st.composite
def histories(draw) -> list[UsageEvent]:
    n = draw(st.integers(0, 40))
    events = []
    for i in range(n):
        kind = draw(st.sampled_from(["disk", "disk", "vm", "vm", "oneoff", "credit", "ram"]))
        user, inst = draw(st.sampled_from(USERS)), draw(st.sampled_from(INSTANCES))
        project = draw(st.sampled_from(["", "proj"]))
        absolute = False
        if kind == "disk":
            name, value = "pithos.diskspace", draw(st.integers(-3, 5)) * GiB + draw(st.integers(0, 999))
            absolute = draw(st.integers(0, 5)) == 0
        elif kind == "ram":
            name, value = "cyclades.ram", draw(st.integers(-2, 4)) * (GiB // 4)
        elif kind == "vm":
            name, value = "cyclades.vmtime", draw(st.sampled_from([0, 1, 1, 2]))
        elif kind == "oneoff":
            name, value = "billing.oneoff", draw(st.integers(0, 7))
        else:
            name, value, inst = "billing.credit", draw(st.integers(1, 100)), ""
        events.append(UsageEvent(id=f"ev{i}", user=user, resource=name, value=Decimal(value),
                                 occurred=BASE + _when(draw), instance=inst, project=project,
                                 absolute=absolute))
    return events


@st.composite
def price_tables(draw):
    versions = [price("pithos.diskspace", "1"), price("cyclades.vmtime", "0.01", state="on"),
                price("cyclades.vmtime", "0.001", state="off"), price("billing.oneoff", "2.5")]
    for _ in range(draw(st.integers(0, 6))):
        name, state = draw(st.sampled_from([("pithos.diskspace", ""), ("cyclades.vmtime", "on"),
                                            ("cyclades.ram", ""), ("billing.oneoff", "")]))
        amount = str(draw(st.integers(0, 10_000)) / Decimal(1000))
        when = (BASE + _when(draw)).strftime("%Y-%m-%d %H:%M:%S.%f")
        versions.append(price(name, amount, draw(st.sampled_from([None, "MiB·h"])) if name ==
                              "pithos.diskspace" else None, at=when, state=state,
                              project=draw(st.sampled_from(["", "proj"]))))
    return table(*versions)


@st.composite
def deliveries(draw, events: list[UsageEvent]) -> list[UsageEvent]:
    """``events`` in time order, each delayed by up to a window of 5 places, some sent twice."""
    ordered = sorted(events, key=lambda e: e.order)
    window = 5
    keyed = [(i + draw(st.integers(0, window)), i, e) for i, e in enumerate(ordered)]
    for i, e in enumerate(ordered):
        if draw(st.integers(0, 3)) == 0:                  # a duplicate, delivered later
            keyed.append((i + draw(st.integers(0, 2 * window)), i, e))
    return [e for _, _, e in sorted(keyed, key=lambda x: (x[0], x[1]))]


def _sum(*parts: Totals) -> Totals:
    out: Totals = {}
    for part in parts:
        for line, charge in part.items():
            add_charge(out, line, charge)
    return out


END = BASE + timedelta(microseconds=SPAN_US + 1)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_running_totals_equal_a_replay_from_scratch(data) -> None:
    events = data.draw(histories())
    prices = data.draw(price_tables())
    delivered = data.draw(deliveries(events))
    led = Ledger(prices)
    recorded = [led.record(e) for e in delivered]
    assert sum(recorded) == len(events)                   # every duplicate was refused
    assert led.totals(END) == fold(events, prices, None, END)
    assert led.totals() == fold(events, prices)           # closed charges only: no open tails
    for user in USERS:
        assert led.balance(user, END) == -sum((c.credits for k, c in fold(events, prices, None, END)
                                              .items() if k.user == user), start=0)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_splitting_the_period_anywhere_adds_up_to_the_whole(data) -> None:
    events = data.draw(histories())
    prices = data.draw(price_tables())
    a_us = data.draw(st.integers(0, SPAN_US))
    c_us = data.draw(st.integers(a_us, SPAN_US + 1))
    b_us = data.draw(st.integers(a_us, c_us))
    a, b, c = (BASE + timedelta(microseconds=x) for x in (a_us, b_us, c_us))
    assert _sum(fold(events, prices, a, b), fold(events, prices, b, c)) == fold(events, prices, a, c)
    assert _sum(fold(events, prices, None, b), fold(events, prices, b, c)) == fold(events, prices, None, c)
