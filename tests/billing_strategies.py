"""Hypothesis strategies of the billing tests: usage histories, price tables, deliveries."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from billing_helpers import GiB, T, price, table
from hypothesis import strategies as st

from control.billing.events import UsageEvent

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
    """Usage events of two users and instances over three days around a month start."""
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
    """A price table: the base prices plus up to six later versions."""
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
