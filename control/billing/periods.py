"""Times and billing months: UTC, microsecond resolution, months cut at 00:00 UTC of the 1st."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from archipelago.errors import InvalidArgument

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_ONE_US = timedelta(microseconds=1)
_RELATIVE = re.compile(r"now\s*(?:([+-])\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d))?")
_STEP = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def micros(delta: timedelta) -> int:
    """Whole microseconds in ``delta`` (exact: timedelta has microsecond resolution)."""
    return delta // _ONE_US


def to_micros(t: datetime) -> int:
    """Microseconds since the epoch (how times are stored)."""
    return micros(t - EPOCH)


def from_micros(us: int) -> datetime:
    """The UTC time ``us`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=us)


def utc(t: datetime) -> datetime:
    """``t`` in UTC; a naive time is taken as UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time ("2026-03-01T12:00:00Z"; naive means UTC), or "now", "now+2h",
    "now-30m" (s, m, h, d) relative to ``now`` (default: the clock); InvalidArgument if bad."""
    rel = _RELATIVE.fullmatch(text.strip()) if isinstance(text, str) else None
    try:
        if rel:
            t = utc(now) if now is not None else datetime.now(UTC)
            if rel.group(1):
                step = timedelta(seconds=float(rel.group(2)) * _STEP[rel.group(3)])
                t = t + step if rel.group(1) == "+" else t - step
        else:
            t = utc(datetime.fromisoformat(text.strip()))
    except (ValueError, AttributeError, OverflowError):
        t = None
    if t is None or not 1970 <= t.year <= 9998:  # months after the last must exist
        raise InvalidArgument(f"bad time {text!r}: expected ISO 8601 between 1970 and 9998 "
                              f"(e.g. 2026-03-01T12:00:00Z) or now[+-]N(s|m|h|d)")
    return t


def month_start(t: datetime) -> datetime:
    """00:00 UTC of the first day of ``t``'s month."""
    t = utc(t)
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def next_month(t: datetime) -> datetime:
    """The start of the month after ``t``'s."""
    t = utc(t)
    return datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)


def month_name(t: datetime) -> str:
    """"YYYY-MM" of ``t`` (UTC)."""
    t = utc(t)
    return f"{t.year:04d}-{t.month:02d}"


def parse_month(text: str) -> tuple[datetime, datetime]:
    """[start, end) of month "YYYY-MM"; InvalidArgument for "2026-13" and the like."""
    m = _MONTH.fullmatch(text.strip()) if isinstance(text, str) else None
    if not m or not 1 <= int(m.group(2)) <= 12 or not 1970 <= int(m.group(1)) <= 9998:
        raise InvalidArgument(f"bad month {text!r}: expected YYYY-MM, month 01-12, year 1970-9998")
    start = datetime(int(m.group(1)), int(m.group(2)), 1, tzinfo=UTC)
    return start, next_month(start)


def month_cuts(a: datetime, b: datetime) -> list[datetime]:
    """Month starts strictly inside (a, b)."""
    cuts, t = [], next_month(a)
    while t < b:
        cuts.append(t)
        t = next_month(t)
    return cuts
