"""Aquarium's bill scenarios, each expected bill computed by hand in the test.

Units: disk space is priced in credits per GiB·h (one scenario per MiB·h, Aquarium's
unit), VM time in credits per hour of each state. Bills show quantities in GiB·h or h
and credits rounded half-to-even to 6 decimals (control/billing/bill.py).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from billing_helpers import GiB, T, ev, price, table

from control.billing.bill import make_bill, rounded
from control.billing.ledger import Ledger, fold
from control.billing.periods import parse_month
from control.billing.resources import DESTROYED, OFF, ON

U = "9e5bd1c8-user"


def month_bill(events, prices, month: str, until=None):
    start, end = parse_month(month)
    end = min(end, until) if until else end
    return make_bill(fold(events, prices, start, end), U, start, end, month)


def lines(bill) -> dict[tuple[str, str], tuple[str, str, str]]:
    return {(x.resource, x.state): (str(rounded(x.quantity)), x.unit, str(rounded(x.credits)))
            for x in bill.lines}


DISK = [
    ev(U, "pithos.diskspace", 1 * GiB, "2026-03-01 00:00"),
    ev(U, "pithos.diskspace", 2 * GiB, "2026-03-01 10:00"),   # grows to 3 GiB
    ev(U, "pithos.diskspace", -1 * GiB, "2026-03-02 10:00"),  # shrinks to 2 GiB
    ev(U, "pithos.diskspace", -2 * GiB, "2026-03-03 04:00"),  # deleted
]


def test_disk_grows_shrinks_and_is_deleted_within_a_month() -> None:
    # 1 GiB × 10 h + 3 GiB × 24 h + 2 GiB × 18 h = 10 + 72 + 36 = 118 GiB·h; at 0.5 → 59 credits.
    bill = month_bill(DISK, table(price("pithos.diskspace", "0.5", "GiB·h")), "2026-03")
    assert lines(bill) == {("pithos.diskspace", ""): ("118.000000", "GiB·h", "59.000000")}
    assert bill.total == 59
    # Nothing after the delete: April is empty, and so is February.
    assert month_bill(DISK, table(price("pithos.diskspace", "0.5")), "2026-04").lines == []
    assert month_bill(DISK, table(price("pithos.diskspace", "0.5")), "2026-02").lines == []


def test_disk_priced_per_mib_hour_as_aquarium() -> None:
    # Aquarium: credits = MB(level) × hours × price. 118 GiB·h = 120832 MiB·h; × 0.001 = 120.832.
    bill = month_bill(DISK, table(price("pithos.diskspace", "0.001", "MiB*h")), "2026-03")
    assert bill.total == Fraction("120.832")
    assert lines(bill)[("pithos.diskspace", "")] == ("118.000000", "GiB·h", "120.832000")


VM = [
    ev(U, "cyclades.vmtime", ON, "2026-01-31 20:00", instance="vm-7"),
    ev(U, "cyclades.vmtime", OFF, "2026-01-31 22:00", instance="vm-7"),
    ev(U, "cyclades.vmtime", ON, "2026-02-01 02:00", instance="vm-7"),
    ev(U, "cyclades.vmtime", DESTROYED, "2026-02-01 08:00", instance="vm-7"),
]
VM_PRICES = table(price("cyclades.vmtime", "0.01", "h", state="on"),
                  price("cyclades.vmtime", "0.001", "h", state="off"))


def test_vm_on_off_on_destroyed_across_a_month_boundary() -> None:
    # January: on 20:00-22:00 = 2 h × 0.01 = 0.02; off 22:00-24:00 = 2 h × 0.001 = 0.002.
    jan = month_bill(VM, VM_PRICES, "2026-01")
    assert lines(jan) == {("cyclades.vmtime", "off"): ("2.000000", "h", "0.002000"),
                          ("cyclades.vmtime", "on"): ("2.000000", "h", "0.020000")}
    assert jan.total == Fraction("0.022")
    # February: off 00:00-02:00 = 0.002; on 02:00-08:00 = 6 h × 0.01 = 0.06; destroyed costs nothing.
    feb = month_bill(VM, VM_PRICES, "2026-02")
    assert lines(feb) == {("cyclades.vmtime", "off"): ("2.000000", "h", "0.002000"),
                          ("cyclades.vmtime", "on"): ("6.000000", "h", "0.060000")}
    assert feb.total == Fraction("0.062")
    assert month_bill(VM, VM_PRICES, "2026-03").lines == []


def test_price_change_mid_month_applies_from_its_date_only() -> None:
    events = [ev(U, "pithos.diskspace", GiB, "2026-03-01 00:00")]   # never removed: open interval
    before = table(price("pithos.diskspace", "1"))
    after = table(price("pithos.diskspace", "1"), price("pithos.diskspace", "2", at="2026-03-16 00:00"))
    # 1-15 March: 360 h × 1 = 360; 16-31 March: 384 h × 2 = 768; 1128 credits for 744 GiB·h.
    bill = month_bill(events, after, "2026-03")
    assert lines(bill) == {("pithos.diskspace", ""): ("744.000000", "GiB·h", "1128.000000")}
    # Not retroactive: the first half is billed the same with or without the new version.
    half = T("2026-03-16 00:00")
    assert month_bill(events, after, "2026-03", half).total == \
        month_bill(events, before, "2026-03", half).total == 360


def test_per_project_price_list_wins_where_it_has_a_version() -> None:
    prices = table(price("pithos.diskspace", "1"),
                   price("pithos.diskspace", "0.5", at="2026-03-10 00:00", project="proj-p"))
    events = [ev(U, "pithos.diskspace", GiB, "2026-03-01 00:00", instance="proj-p", project="proj-p"),
              ev(U, "pithos.diskspace", -GiB, "2026-03-20 00:00", instance="proj-p", project="proj-p"),
              ev(U, "pithos.diskspace", GiB, "2026-03-01 00:00", instance=U, project=U),
              ev(U, "pithos.diskspace", -GiB, "2026-03-02 00:00", instance=U, project=U)]
    # proj-p: 1-10 March 216 h × 1 (no project version yet) + 10-20 March 240 h × 0.5 = 336;
    # the system project pays the default: 24 h × 1 = 24. Total 360 for 480 GiB·h.
    bill = month_bill(events, prices, "2026-03")
    assert lines(bill) == {("pithos.diskspace", ""): ("480.000000", "GiB·h", "360.000000")}


def test_credits_added_and_balance() -> None:
    led = Ledger(table(price("pithos.diskspace", "1")))
    led.record(ev(U, "billing.credit", 100, "2026-03-05 00:00"))
    led.record(ev(U, "pithos.diskspace", GiB, "2026-03-05 00:00"))
    led.record(ev(U, "pithos.diskspace", -GiB, "2026-03-05 10:00"))
    # 1 GiB × 10 h × 1 = 10 charged; 100 added: balance 90.
    assert led.balance(U, T("2026-04-01 00:00")) == 90
    bill = make_bill(led.totals(T("2026-04-01 00:00")), U, *parse_month("2026-03"))
    assert bill.credits_added == 100 and bill.total == 10
    assert bill.to_dict()["credits_added"] == "100.000000"


def test_open_interval_is_charged_up_to_the_bills_end() -> None:
    events = [ev(U, "pithos.diskspace", GiB, "2026-03-01 00:00")]
    # 2 h 0.5 s = 2.000138(8) GiB·h at 1/GiB·h → 2.000139 shown (half-even at 6 decimals).
    bill = month_bill(events, table(price("pithos.diskspace", "1")), "2026-03", T("2026-03-01 02:00:00.5"))
    assert bill.total == Fraction(2) + Fraction(1, 7200)
    assert bill.to_dict()["total"] == "2.000139"
    assert bill.to_dict()["lines"] == [{"resource": "pithos.diskspace", "quantity": "2.000139",
                                        "unit": "GiB·h", "credits": "2.000139"}]


def test_continuous_interval_is_cut_at_the_month_start() -> None:
    events = [ev(U, "cyclades.ram", 2 * GiB, "2026-01-31 23:00"),
              ev(U, "cyclades.ram", -2 * GiB, "2026-02-01 01:00")]
    prices = table(price("cyclades.ram", "0.25"))
    # 2 GiB × 1 h in each month × 0.25 = 0.5 in each.
    assert month_bill(events, prices, "2026-01").total == month_bill(events, prices, "2026-02").total \
        == Fraction(1, 2)


def test_discrete_value_times_price_and_unpriced_usage() -> None:
    events = [ev(U, "billing.oneoff", 3, "2026-03-02 00:00"),
              ev(U, "cyclades.cpu", 2, "2026-03-01 00:00"),
              ev(U, "cyclades.cpu", -2, "2026-03-01 05:00")]
    bill = month_bill(events, table(price("billing.oneoff", "2.5")), "2026-03")
    # 3 × 2.5 = 7.5; 2 cpu × 5 h = 10 cpu·h with no price: quantity shown, 0 credits.
    assert lines(bill) == {("billing.oneoff", ""): ("3.000000", "unit", "7.500000"),
                           ("cyclades.cpu", ""): ("10.000000", "cpu·h", "0.000000")}


def test_absolute_level_event_sets_the_level() -> None:
    events = [ev(U, "storage.volume", 4 * GiB, "2026-03-01 00:00", instance="vol1"),
              ev(U, "storage.volume", 0, "2026-03-01 03:00", instance="vol1", absolute=True)]
    # 4 GiB × 3 h = 12 GiB·h × 0.1 = 1.2
    assert month_bill(events, table(price("storage.volume", "0.1")), "2026-03").total == Fraction("1.2")


def test_rounding_is_half_to_even_at_micro_credits() -> None:
    assert rounded(Fraction(1, 2_000_000)) == Decimal("0.000000")
    assert rounded(Fraction(3, 2_000_000)) == Decimal("0.000002")
    assert rounded(Fraction(-3, 2_000_000)) == Decimal("-0.000002")
    assert rounded(Fraction(2, 3)) == Decimal("0.666667")
