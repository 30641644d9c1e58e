"""The versioned price table: prices with effective dates, a default list and per-project lists.

A version applies from its effective time until the next version of the same
(resource, state, project); a project's list, where it has a version in force, wins
over the default list (project ""). Nothing here is retroactive by itself: the
service refuses versions that start in the past.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from archipelago.errors import InvalidArgument
from control.billing.periods import utc
from control.billing.resources import Policy, resource
from control.billing.units import Unit, parse_unit

MAX_PRICE = Decimal(10) ** 12
MAX_DECIMALS = 12


@dataclass(frozen=True)
class Price:
    """One price version: ``price`` credits per ``unit`` of ``resource`` from ``effective`` on."""

    resource: str
    price: Decimal
    unit: Unit
    effective: datetime
    state: str = ""
    project: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """(resource, state, project): the list this version belongs to."""
        return (self.resource, self.state, self.project)


def parse_price(text: str | int | Decimal) -> Decimal:
    """A price: a finite decimal ≥ 0, ≤ 1e12, at most 12 decimals; InvalidArgument otherwise."""
    try:
        value = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        raise InvalidArgument(f"bad price {text!r}: expected a decimal number such as 0.01") from None
    if not value.is_finite():
        raise InvalidArgument(f"bad price {text!r}: expected a finite number")
    if value < 0:
        raise InvalidArgument(f"bad price {text!r}: prices cannot be negative")
    if value > MAX_PRICE or -value.normalize().as_tuple().exponent > MAX_DECIMALS:
        raise InvalidArgument(f"bad price {text!r}: at most 1e12 with 12 decimals")
    return value


def parse_amount(text: str | int | Decimal) -> Decimal:
    """Credits to add: a decimal > 0, ≤ 1e12, at most 6 decimals; InvalidArgument otherwise."""
    try:
        value = parse_price(text)
    except InvalidArgument as e:
        raise InvalidArgument(str(e).replace("bad price", "bad amount")
                              .replace("prices cannot", "amounts cannot")) from None
    if value <= 0 or -value.normalize().as_tuple().exponent > 6:
        raise InvalidArgument(f"bad amount {text!r}: credits to add must be > 0 with at most 6 decimals")
    return value


def make_price(name: str, price: str | int | Decimal, unit: str | None, effective: datetime,
               state: str = "", project: str = "") -> Price:
    """A validated Price (unknown resource, unpriceable resource, bad state or unit → InvalidArgument)."""
    res = resource(name)
    if res.policy is Policy.CREDIT:
        raise InvalidArgument(f"{name} is not priced: one credit added is one credit")
    state = state or ""
    if res.policy is Policy.ONOFF and state not in res.states:
        raise InvalidArgument(f"{name} is priced per state: give the state on or off")
    if res.policy is not Policy.ONOFF and state:
        raise InvalidArgument(f"{name} has no states (only on/off resources do)")
    return Price(name, parse_price(price), parse_unit(res, unit), utc(effective), state, project or "")


class PriceTable:
    """Every price version, looked up by (resource, state, project) and time."""

    def __init__(self, prices: Iterable[Price] = ()) -> None:
        self._lists: dict[tuple[str, str, str], list[Price]] = {}
        for p in prices:
            self.add(p)

    def add(self, price: Price) -> None:
        """Add a version; one with the same key and effective time replaces the older one."""
        versions = self._lists.setdefault(price.key, [])
        times = [v.effective for v in versions]
        i = bisect.bisect_left(times, price.effective)
        if i < len(versions) and versions[i].effective == price.effective:
            versions[i] = price
        else:
            versions.insert(i, price)

    def __iter__(self) -> Iterator[Price]:
        for key in sorted(self._lists):
            yield from self._lists[key]

    def _in_force(self, key: tuple[str, str, str], t: datetime) -> Price | None:
        versions = self._lists.get(key, [])
        i = bisect.bisect_right([v.effective for v in versions], t)
        return versions[i - 1] if i else None

    def at(self, name: str, state: str, project: str, t: datetime) -> Price | None:
        """The version in force at ``t`` (the project's list first, then the default); None: unpriced."""
        if project:
            found = self._in_force((name, state, project), t)
            if found is not None:
                return found
        return self._in_force((name, state, ""), t)

    def cuts(self, name: str, state: str, project: str, a: datetime, b: datetime) -> list[datetime]:
        """Effective times strictly inside (a, b) of the lists that price (name, state, project)."""
        keys = [(name, state, "")] + ([(name, state, project)] if project else [])
        return sorted({v.effective for k in keys for v in self._lists.get(k, []) if a < v.effective < b})
