"""Units of quantities and prices, and their factors in base units.

Base units: bytes (or one count) for levels and values, microseconds for time. A
unit's ``factor`` is how many base units it holds: GiB·h = 2**30 × 3.6e9 byte·µs.
Canonical names use "·"; "*", "-" and "." are accepted in its place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from archipelago.errors import InvalidArgument
from control.billing.resources import Policy, Resource

SIZES = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
TIMES = {"s": 10**6, "min": 60 * 10**6, "h": 3600 * 10**6, "day": 86400 * 10**6}
_TIME_ALIASES = {"sec": "s", "second": "s", "seconds": "s", "minute": "min", "minutes": "min",
                 "hour": "h", "hours": "h", "d": "day", "days": "day"}
_SEP = re.compile(r"\s*[·*.\-]\s*")


@dataclass(frozen=True)
class Unit:
    """A named unit and its size in base units (byte·µs, µs, bytes or counts)."""

    name: str
    factor: int


def _time(text: str) -> str | None:
    t = _TIME_ALIASES.get(text, text)
    return t if t in TIMES else None


def _amount(res: Resource, text: str) -> tuple[str, int] | None:
    if res.sized:
        return (text, SIZES[text]) if text in SIZES else None
    return (res.base, 1) if text in (res.base, "unit") else None


def _examples(res: Resource) -> str:
    if res.policy is Policy.CONTINUOUS:
        first = "B, KiB, MiB, GiB or TiB" if res.sized else res.base
        return f"{first} · s, min, h or day (e.g. {display_unit(res).name})"
    if res.policy is Policy.ONOFF:
        return "s, min, h or day"
    if res.policy is Policy.DISCRETE:
        return "B, KiB, MiB, GiB or TiB" if res.sized else res.base
    return "credit"


def parse_unit(res: Resource, text: str | None) -> Unit:
    """The unit ``text`` for prices of ``res`` (None: its display unit); InvalidArgument if wrong."""
    if text is None or not text.strip():
        return display_unit(res)
    parts = _SEP.split(text.strip())
    unit: Unit | None = None
    if res.policy is Policy.CONTINUOUS and len(parts) == 2:
        amount, time = _amount(res, parts[0]), _time(parts[1])
        if amount and time:
            unit = Unit(f"{amount[0]}·{time}", amount[1] * TIMES[time])
    elif res.policy is Policy.ONOFF:
        time = _time(parts[-1])
        if time and (len(parts) == 1 or (len(parts) == 2 and parts[0] in (res.base, "unit"))):
            unit = Unit(time, TIMES[time])
    elif res.policy is Policy.DISCRETE and len(parts) == 1:
        amount = _amount(res, parts[0])
        if amount:
            unit = Unit(*amount)
    elif res.policy is Policy.CREDIT and parts == ["credit"]:
        unit = Unit("credit", 1)
    if unit is None:
        raise InvalidArgument(f"bad unit {text!r} for {res.name}: expected {_examples(res)}")
    return unit


def display_unit(res: Resource) -> Unit:
    """The unit bills show quantities of ``res`` in (GiB·h, cpu·h, h, GiB, unit, credit)."""
    amount = ("GiB", SIZES["GiB"]) if res.sized else (res.base, 1)
    if res.policy is Policy.CONTINUOUS:
        return Unit(f"{amount[0]}·h", amount[1] * TIMES["h"])
    if res.policy is Policy.ONOFF:
        return Unit("h", TIMES["h"])
    if res.policy is Policy.DISCRETE:
        return Unit(*amount)
    return Unit("credit", 1)
