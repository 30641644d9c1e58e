"""Helpers for the billing tests: times, events and price tables in one line each."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

from control.billing.events import UsageEvent
from control.billing.prices import Price, PriceTable, make_price

GiB = 1 << 30
_ids = itertools.count()


def T(text: str) -> datetime:
    """A UTC time from "YYYY-MM-DD HH:MM[:SS[.ffffff]]"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ev(user: str, resource: str, value: int | str | Decimal, at: str | datetime, instance: str = "",
       project: str = "", absolute: bool = False, id: str | None = None) -> UsageEvent:
    """A usage event with a fresh id unless one is given."""
    when = T(at) if isinstance(at, str) else at
    return UsageEvent(id=id or f"e{next(_ids)}", user=user, resource=resource, value=Decimal(value),
                      occurred=when, instance=instance, project=project, absolute=absolute)


def price(resource: str, amount: str, unit: str | None = None, at: str = "2000-01-01 00:00",
          state: str = "", project: str = "") -> Price:
    """A validated price version."""
    return make_price(resource, amount, unit, T(at), state, project)


def table(*prices: Price) -> PriceTable:
    """A price table holding ``prices``."""
    return PriceTable(prices)
