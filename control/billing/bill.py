"""Bills and usage reports from charges; the one place where exact credits get rounded.

Rounding (stated once): every figure shown — a line's quantity and credits, a bill's
total, a balance — is its exact value rounded half-to-even to 6 decimals (credits to
micro-credits). Totals are summed exactly before they are rounded, so a shown total may
differ from the sum of its shown lines by less than one micro-unit per line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from control.billing.ledger import ZERO, Totals
from control.billing.resources import RESOURCES, Policy
from control.billing.units import display_unit

PLACES = 6


def rounded(x: Fraction, places: int = PLACES) -> Decimal:
    """``x`` rounded half-to-even to ``places`` decimals, as an exact Decimal."""
    scaled = x * 10**places
    q, r = divmod(scaled.numerator, scaled.denominator)
    twice = 2 * r
    if twice > scaled.denominator or (twice == scaled.denominator and q % 2):
        q += 1
    return Decimal(q).scaleb(-places)


@dataclass(frozen=True)
class Line:
    """One line: a resource (and state, or instance) with its quantity and credits."""

    resource: str
    state: str
    instance: str | None
    quantity: Fraction      # in ``unit``
    unit: str
    credits: Fraction

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (decimal strings)."""
        d: dict[str, Any] = {"resource": self.resource}
        if self.state:
            d["state"] = self.state
        if self.instance is not None:
            d["instance"] = self.instance
        d.update(quantity=str(rounded(self.quantity)), unit=self.unit,
                 credits=str(rounded(self.credits)))
        return d


@dataclass
class Bill:
    """One user's charges over [start, end): usage lines, credits added, total charged."""

    user: str
    start: datetime
    end: datetime
    lines: list[Line] = field(default_factory=list)
    credits_added: Fraction = ZERO
    month: str | None = None

    @property
    def total(self) -> Fraction:
        """Credits charged for usage (exact)."""
        return sum((line.credits for line in self.lines), ZERO)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: lines with resource, quantity, unit, credits; and the total."""
        return {"user": self.user, "month": self.month, "from": self.start.isoformat(),
                "until": self.end.isoformat(), "lines": [line.to_dict() for line in self.lines],
                "credits_added": str(rounded(self.credits_added)), "total": str(rounded(self.total))}


def make_lines(totals: Totals, user: str, per_instance: bool = False) -> tuple[list[Line], Fraction]:
    """Usage lines of ``user`` (per resource and state, or per instance too) and credits added."""
    sums: dict[tuple[str, str, str | None], tuple[Fraction, Fraction]] = {}
    added = ZERO
    for key, charge in totals.items():
        if key.user != user:
            continue
        if RESOURCES[key.resource].policy is Policy.CREDIT:
            added += charge.quantity
            continue
        group = (key.resource, key.state, key.instance if per_instance else None)
        q, c = sums.get(group, (ZERO, ZERO))
        sums[group] = (q + charge.quantity, c + charge.credits)
    lines = []
    for (name, state, instance), (q, c) in sorted(sums.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                                   kv[0][2] or "")):
        unit = display_unit(RESOURCES[name])
        lines.append(Line(name, state, instance, q / unit.factor, unit.name, c))
    return lines, added


def make_bill(totals: Totals, user: str, start: datetime, end: datetime,
              month: str | None = None) -> Bill:
    """The bill of ``user`` from charges already restricted to [start, end)."""
    lines, added = make_lines(totals, user)
    return Bill(user, start, end, lines, added, month)
