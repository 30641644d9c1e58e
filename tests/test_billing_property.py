"""Property tests of the billing engine (hypothesis).

For random usage histories delivered out of order (within a window) and with
duplicates: the running ledger equals a replay of the whole log from scratch, and
charges over [a, c) equal charges over [a, b) plus [b, c) for any b — exactly.
"""

from __future__ import annotations

from datetime import timedelta

from billing_strategies import BASE, SPAN_US, USERS, deliveries, histories, price_tables
from hypothesis import given, settings
from hypothesis import strategies as st

from control.billing.ledger import Ledger, Totals, add_charge, fold


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
