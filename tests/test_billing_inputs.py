"""Billing engine inputs: units, prices, months, times and events — good and bad."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

import pytest
from billing_helpers import T, price, table

from archipelago.errors import InvalidArgument
from control.billing.events import UsageEvent
from control.billing.periods import month_cuts, parse_month, parse_time
from control.billing.prices import parse_price
from control.billing.resources import RESOURCES, resource
from control.billing.units import parse_unit


@pytest.mark.parametrize("text,name,factor", [
    (None, "GiB·h", 2**30 * 3600 * 10**6),
    ("GiB*h", "GiB·h", 2**30 * 3600 * 10**6),
    ("MiB-hour", "MiB·h", 2**20 * 3600 * 10**6),
    ("TiB.day", "TiB·day", 2**40 * 86400 * 10**6),
    ("B·s", "B·s", 10**6),
])
def test_size_time_units(text, name, factor) -> None:
    unit = parse_unit(resource("pithos.diskspace"), text)
    assert (unit.name, unit.factor) == (name, factor)


def test_other_policies_units() -> None:
    assert parse_unit(resource("cyclades.cpu"), "cpu*min").name == "cpu·min"
    assert parse_unit(resource("cyclades.vmtime"), "hours").name == "h"
    assert parse_unit(resource("cyclades.vmtime"), "vm·h").factor == 3600 * 10**6
    assert parse_unit(resource("billing.oneoff"), None).name == "unit"


@pytest.mark.parametrize("name,text", [
    ("pithos.diskspace", "GB*h"), ("pithos.diskspace", "GiB"), ("pithos.diskspace", "GiB*fortnight"),
    ("cyclades.cpu", "GiB*h"), ("cyclades.vmtime", "GiB*h"), ("billing.oneoff", "unit*h"),
])
def test_bad_units_are_refused_with_the_expected_form(name, text) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(f"bad unit {text!r} for {name}: expected")):
        parse_unit(resource(name), text)


@pytest.mark.parametrize("text,why", [
    ("-1", "cannot be negative"), ("-0.01", "cannot be negative"), ("abc", "expected a decimal"),
    ("nan", "finite"), ("inf", "finite"), ("1e13", "at most"), ("0.0000000000001", "at most"),
])
def test_bad_prices(text, why) -> None:
    with pytest.raises(InvalidArgument, match=why):
        parse_price(text)


def test_good_prices_are_exact() -> None:
    assert parse_price("0.01") == Decimal("0.01")
    assert parse_price("0") == 0
    assert parse_price(" 1E-3 ") == Decimal("0.001")


def test_unknown_resource_names_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match="unknown resource 'pithos.bogus' .*pithos.diskspace"):
        price("pithos.bogus", "1")
    assert "cyclades.vmtime" in RESOURCES


def test_state_rules_of_prices() -> None:
    with pytest.raises(InvalidArgument, match="priced per state"):
        price("cyclades.vmtime", "1")
    with pytest.raises(InvalidArgument, match="priced per state"):
        price("cyclades.vmtime", "1", state="destroyed")
    with pytest.raises(InvalidArgument, match="no states"):
        price("pithos.diskspace", "1", state="on")
    with pytest.raises(InvalidArgument, match="not priced"):
        price("billing.credit", "1")


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "26-01", "march", "", "1969-12"])
def test_bad_months(text) -> None:
    with pytest.raises(InvalidArgument, match="bad month"):
        parse_month(text)


def test_months() -> None:
    assert parse_month("2026-12") == (T("2026-12-01 00:00"), T("2027-01-01 00:00"))
    assert month_cuts(T("2026-01-31 00:00"), T("2026-03-01 00:00")) == [T("2026-02-01 00:00")]
    assert month_cuts(T("2026-01-01 00:00"), T("2026-01-05 00:00")) == []


def test_times() -> None:
    assert parse_time("2026-03-01T12:00:00Z") == T("2026-03-01 12:00")
    assert parse_time("2026-03-01T14:00:00+02:00") == T("2026-03-01 12:00")
    assert parse_time("2026-03-01 12:00") == T("2026-03-01 12:00")   # naive means UTC
    for bad in ("yesterday", "2026-02-30T00:00", "9999-12-31T23:00"):
        with pytest.raises(InvalidArgument, match="bad time"):
            parse_time(bad)


def _event(**kw) -> UsageEvent:
    base = dict(id="x", user="u", resource="pithos.diskspace", value=Decimal(1),
                occurred=T("2026-01-01 00:00"))
    base.update(kw)
    return UsageEvent(**base)


@pytest.mark.parametrize("kw,why", [
    ({"id": ""}, "bad event id"), ({"id": "x" * 201}, "bad event id"), ({"user": ""}, "no user"),
    ({"resource": "nope"}, "unknown resource"), ({"value": "nan"}, "finite"), ({"value": "zz"}, "finite"),
    ({"resource": "cyclades.vmtime", "value": 3}, "states"),
    ({"resource": "billing.oneoff", "absolute": True}, "absolute"),
    ({"occurred": "2026-01-01"}, "must be a time"),
])
def test_bad_events(kw, why) -> None:
    with pytest.raises(InvalidArgument, match=why):
        _event(**kw)


def test_event_round_trips_through_its_dict() -> None:
    e = _event(instance="p", project="p", details={"path": "/a"}, type="identity.commission.accepted",
               occurred=datetime.fromisoformat("2026-01-01T00:00:00.000007+00:00"))
    assert UsageEvent.from_dict(e.to_dict()) == e
    assert UsageEvent.from_dict(e.to_dict()).details == {"path": "/a"}


def test_same_time_versions_replace_and_lookup_falls_back_to_default() -> None:
    t = table(price("pithos.diskspace", "1", at="2026-01-01 00:00"),
              price("pithos.diskspace", "3", at="2026-01-01 00:00"),
              price("pithos.diskspace", "5", at="2026-02-01 00:00", project="p"))
    assert [p.price for p in t] == [Decimal(3), Decimal(5)]
    assert t.at("pithos.diskspace", "", "p", T("2026-01-15 00:00")).price == 3
    assert t.at("pithos.diskspace", "", "p", T("2026-02-15 00:00")).price == 5
    assert t.at("pithos.diskspace", "", "q", T("2026-02-15 00:00")).price == 3
    assert t.at("pithos.diskspace", "", "", T("2025-12-31 00:00")) is None
