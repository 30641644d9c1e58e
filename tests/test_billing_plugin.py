"""The billing plugin on the host: migrations, prices, events through the outbox (dedup,
late delivery, malformed payloads), credits, replay checks, the commission guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path

import pytest
import sqlalchemy as sa
from billing_helpers import GiB, T
from billing_strategies import deliveries, histories, price_tables
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archipelago import config as cfgmod
from archipelago.errors import InvalidArgument, QuotaExceeded
from archipelago.instance import Instance
from control.billing import store, tables
from control.billing.ledger import fold
from control.billing.plugin import BillingPlugin
from control.billing.service import BillingService
from control.host.host import Host
from control.host.migrate import schema_diff
from control.host.plugin import Event

NOW = T("2026-03-01 00:00")
U = "3f0c2a9e-user"


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    h = Host(Instance(tmp_path).ensure(), cfgmod.load(tmp_path, env={}), plugin_classes=[BillingPlugin])
    h.plugin("billing").service.now = lambda: NOW
    await h.open()
    try:
        yield h
    finally:
        await h.close()


def _billing(host: Host) -> BillingPlugin:
    plugin = host.plugin("billing")
    assert isinstance(plugin, BillingPlugin)
    return plugin


async def _emit(host: Host, *events: Event) -> None:
    async with host.db.begin() as conn:
        for ev in events:
            await host.events.emit(conn, ev)


def _commission(eid: str, delta: int, at: str, user: str = U, resource: str = "pithos.diskspace") -> Event:
    return Event("identity.commission.accepted",
                 {"serial": 1, "name": "upload", "holder": f"user:{user}", "user": user, "project": user,
                  "resource": resource, "delta": delta, "time": T(at).timestamp()}, id=eid)


async def _count(host: Host, table: sa.Table) -> int:
    async with host.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def test_migrations_create_exactly_the_billing_tables(host: Host) -> None:
    assert await schema_diff(host.db, tables.metadata) == []
    st = await host.migrator.status(host.db)
    assert st["billing"] == {"current": "billing_0001", "head": "billing_0001"}


async def test_prices_are_never_retroactive(host: Host) -> None:
    svc = _billing(host).service
    with pytest.raises(InvalidArgument, match="never retroactive"):
        await svc.set_price("pithos.diskspace", "1", start=T("2026-02-28 23:59"))
    with pytest.raises(InvalidArgument, match="cannot be negative"):
        await svc.set_price("pithos.diskspace", "-1")
    with pytest.raises(InvalidArgument, match="unknown resource"):
        await svc.set_price("pithos.bogus", "1")
    await svc.set_price("pithos.diskspace", "1")                            # from now
    await svc.set_price("pithos.diskspace", "3", start=T("2026-03-10 00:00"))
    await svc.set_price("pithos.diskspace", "2", "GiB*h", start=T("2026-03-10 00:00"))  # replaces it
    await svc.set_price("cyclades.vmtime", "0.01", state="on")
    assert [(p.resource, p.state, str(p.price), p.effective) for p in await svc.prices()] == [
        ("cyclades.vmtime", "on", "0.01", NOW), ("pithos.diskspace", "", "1", NOW),
        ("pithos.diskspace", "", "2", T("2026-03-10 00:00"))]


async def test_commission_events_become_charges_once(host: Host) -> None:
    billing = _billing(host)
    await billing.service.set_price("pithos.diskspace", "1")
    first = _commission("c1", GiB, "2026-03-01 00:00")
    await _emit(host, first, _commission("c2", -GiB, "2026-03-01 10:00"))
    assert billing.counters()["recorded"] == 2 and await host.events.pending() == 0
    # At-least-once: the same event delivered again is a duplicate and changes nothing.
    await host.events.deliver([first])
    assert billing.counters()["duplicates"] == 1 and await _count(host, tables.events) == 2
    bill = await billing.service.bill(U, "2026-03", T("2026-04-01 00:00"))
    assert bill.total == 10 and [(x.resource, x.credits) for x in bill.lines] == [("pithos.diskspace", 10)]
    assert (await billing.service.balance_dict(U, T("2026-04-01 00:00"))) == {"userId": U,
                                                                          "balance": "-10.000000"}
    assert (await billing.service.replay(check=True)).to_dict()["ok"]


async def test_late_events_refold_and_replay_agrees(host: Host) -> None:
    billing = _billing(host)
    await billing.service.set_price("cyclades.vmtime", "0.01", state="on")
    await billing.service.set_price("cyclades.vmtime", "0.001", state="off")

    def state(eid: str, s: str, at: str) -> Event:
        return Event("compute.server.state", {"server": "vm1", "user": U, "state": s,
                                              "time": T(at).timestamp()}, id=eid)

    # Delivered out of order: ACTIVE at 01:00 arrives after STOPPED at 05:00.
    await _emit(host, state("s1", "BUILD", "2026-03-01 00:00"), state("s3", "STOPPED", "2026-03-01 05:00"))
    await _emit(host, state("s2", "ACTIVE", "2026-03-01 01:00"), state("s4", "DELETED", "2026-03-01 09:00"))
    # off 1 h + on 4 h + off 4 h = 0.001 + 0.04 + 0.004
    billing.service.now = lambda: T("2026-04-02 00:00")
    bill = await billing.service.bill(U, "2026-03")
    assert {x.state: (x.quantity, x.credits) for x in bill.lines} == {"on": (4, Fraction("0.04")),
                                                                      "off": (5, Fraction("0.005"))}
    assert str(bill.to_dict()["total"]) == "0.045000"
    assert await billing.service.balance(U, T("2026-04-01 00:00")) == -bill.total
    assert (await billing.service.replay(check=True)).to_dict()["ok"]


async def test_replay_finds_and_rewrites_tampered_totals(host: Host) -> None:
    billing = _billing(host)
    await billing.service.set_price("pithos.diskspace", "1")
    await _emit(host, _commission("c1", GiB, "2026-03-01 00:00"), _commission("c2", -GiB, "2026-03-01 02:00"))
    async with host.db.begin() as conn:
        await conn.execute(tables.totals.update().values(credits="5"))
    report = (await billing.service.replay(check=True)).to_dict()
    assert report["differences"] == [{"user": U, "month": "2026-03", "running": "5.000000",
                                      "replayed": "2.000000"}]
    assert (await billing.service.replay(check=False)).to_dict()["rewritten"]
    assert (await billing.service.replay(check=True)).to_dict()["ok"]
    assert await billing.service.balance(U) == -2


async def test_credits_go_through_the_outbox(host: Host) -> None:
    billing = _billing(host)
    ev = await billing.credit(U, "25.5", by="admin")
    assert await billing.service.balance(U) == pytest.approx(25.5)
    assert await host.events.pending() == 0 and billing.counters()["recorded"] == 1
    (got,) = await billing.service.events(U)
    assert (got.id, got.resource, got.type) == (ev.id, "billing.credit", "billing.credit")
    for bad, why in (("-1", "negative"), ("0", "> 0"), ("1.0000001", "6 decimals"), ("lots", "decimal")):
        with pytest.raises(InvalidArgument, match=why):
            await billing.credit(U, bad)


async def test_malformed_payloads_are_counted_and_not_redelivered(host: Host) -> None:
    billing = _billing(host)
    await _emit(host, Event("compute.server.state", {"server": "s", "user": U, "state": "DANCING"}))
    assert billing.counters()["rejected"] == 1 and await host.events.pending() == 0
    assert await _count(host, tables.events) == 0


async def test_commission_guard_refuses_new_usage_below_zero(host: Host) -> None:
    billing = _billing(host)
    await billing.service.set_price("pithos.diskspace", "1")
    await billing.commission_guard(U, [{"resource": "pithos.diskspace", "quantity": GiB}])  # 0: allowed
    await _emit(host, _commission("c1", GiB, "2026-03-01 00:00"))
    billing.service.now = lambda: T("2026-03-01 03:00")      # 3 credits charged, none added
    with pytest.raises(QuotaExceeded, match=r"balance of user .* is -3.000000 credits, below zero"):
        await billing.commission_guard(U, [{"resource": "pithos.diskspace", "quantity": GiB}])
    await billing.commission_guard(U, [{"resource": "pithos.diskspace", "quantity": -GiB}])  # release
    await billing.credit(U, "5")
    await billing.commission_guard(U, [{"resource": "pithos.diskspace", "quantity": GiB}])
    assert billing.counters()["refused_commissions"] == 1


async def test_bill_periods_and_bad_months(host: Host) -> None:
    svc: BillingService = _billing(host).service
    with pytest.raises(InvalidArgument, match="bad month"):
        await svc.bill(U, "2026-13")
    with pytest.raises(InvalidArgument, match="not after the start"):
        await svc.bill(U, "2026-04", T("2026-03-15 00:00"))
    with pytest.raises(InvalidArgument, match="2026-04 has not begun"):
        await svc.bill(U, "2026-04")
    p = svc.period(None, T("2026-03-01 02:00"))
    assert (p.month, p.start, p.end) == ("2026-03", T("2026-03-01 00:00"), T("2026-03-01 02:00"))
    assert svc.period("2026-02").end == T("2026-03-01 00:00")      # a past month: whole


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_database_running_totals_equal_the_engine_replay(tmp_path: Path, data) -> None:
    """Random histories delivered late and twice, one transaction each, into the database."""
    events = data.draw(histories())
    prices = data.draw(price_tables())
    delivered = data.draw(deliveries(events))
    loop = asyncio.new_event_loop()
    h = Host(Instance(tmp_path).ensure(), cfgmod.load(tmp_path, env={}), plugin_classes=[BillingPlugin])

    async def run() -> None:
        await h.open()
        try:
            async with h.db.begin() as conn:
                for t in (tables.events, tables.prices, tables.state, tables.totals):
                    await conn.execute(t.delete())
                for p in prices:
                    await conn.execute(tables.prices.insert().values(
                        resource=p.resource, state=p.state, project=p.project,
                        effective_us=store.to_micros(p.effective), price=str(p.price), unit=p.unit.name,
                        set_us=0))
            svc = _billing(h).service
            new = [await svc.record([e]) for e in delivered]
            assert sum(new) == len(events)
            async with h.db.read() as conn:
                _, running = await store.stored(conn)
            assert running == fold(events, prices)
            assert (await svc.replay(check=True)).to_dict()["ok"]
        finally:
            await h.close()

    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


async def test_daily_series_and_chart(host: Host) -> None:
    from control.billing.chart import render

    billing = _billing(host)
    await billing.service.set_price("pithos.diskspace", "1")
    await _emit(host, _commission("c1", GiB, "2026-03-01 12:00"))
    billing.service.now = lambda: T("2026-03-03 06:00")
    period, days, series = await billing.service.daily(U)
    # Day ends 2 March, 3 March, then now (3 March 06:00): 12 h, 36 h, 42 h of 1 GiB at 1 credit/GiB·h.
    assert days == [T("2026-03-02 00:00"), T("2026-03-03 00:00"), T("2026-03-03 06:00")]
    assert series == {"pithos.diskspace": [12, 36, 42]}
    assert (await billing.service.bill(U)).total == 42          # the chart ends where the bill does
    svg = render(f"Charges per resource, {period.month}", days, series)
    assert svg.startswith(b"<?xml") and b"pithos.diskspace" in svg
    assert render("empty", days, {}, "png").startswith(b"\x89PNG")
    with pytest.raises(InvalidArgument, match="chart format"):
        render("x", days, series, "gif")
