"""`archip billing ...` in-process on a private instance: prices, credits, balances, bills
(text and --json), usage, events, chart, replay --check; bad input → one line, exit code."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from archipelago import config as cfgmod
from archipelago.instance import Instance
from control.billing import tables
from control.cli import main
from control.host.host import Host
from control.host.plugin import Event

GiB = 1 << 30


class Cli:
    """`archip` against one data dir with identity and billing enabled."""

    def __init__(self, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.d, self.capsys = data_dir, capsys
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "archipelago.toml").write_text('[control]\nplugins = ["identity", "billing"]\n')

    def __call__(self, *args: str, rc: int = 0) -> tuple[str, str]:
        self.capsys.readouterr()
        got = main(["--data-dir", str(self.d), *args])
        out, err = self.capsys.readouterr()
        assert got == rc, (args, out, err)
        return out, err

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json")[0])

    def host(self, fn: Any) -> Any:
        async def run() -> Any:
            inst = Instance(self.d).ensure()
            host = Host(inst, cfgmod.load(inst.data_dir, env={}))
            try:
                await host.open()
                return await fn(host)
            finally:
                await host.close()

        return asyncio.run(run())


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path / "inst", capsys)


def _accepted(user: str, delta: int, at: datetime) -> Any:
    async def emit(host: Host) -> None:
        async with host.db.begin() as conn:
            await host.events.emit(conn, Event("identity.commission.accepted", {
                "holder": f"user:{user}", "user": user, "project": user, "resource": "pithos.diskspace",
                "delta": delta, "time": at.timestamp()}))
    return emit


def test_prices_credit_balance_bill_usage_events_chart_replay(cli: Cli, tmp_path: Path) -> None:
    uuid = cli.json("user", "add", "zoe")["uuid"]
    assert "no prices set" in cli("billing", "prices", "show")[0]
    cli("billing", "prices", "set", "pithos.diskspace", "1", "--unit", "GiB*h")
    cli("billing", "prices", "set", "cyclades.vmtime", "0.01", "--state", "on", "--from", "now+1d")
    shown = cli.json("billing", "prices", "show")
    assert [(p["resource"], p["state"], p["price"], p["unit"]) for p in shown] == [
        ("cyclades.vmtime", "on", "0.01", "h"), ("pithos.diskspace", "", "1", "GiB·h")]
    assert "credits per GiB·h" in cli("billing", "prices")[0]

    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    cli.host(_accepted(uuid, GiB, t0))
    until = (t0 + timedelta(hours=2)).isoformat()
    bill = cli.json("billing", "bill", "zoe", "--until", until)
    assert bill["lines"] == [{"resource": "pithos.diskspace", "quantity": "2.000000", "unit": "GiB·h",
                              "credits": "2.000000"}]
    assert bill["total"] == "2.000000" and bill["until"] == until
    text = cli("billing", "bill", uuid, "--until", until)[0]
    assert "pithos.diskspace" in text and "2.000000" in text and "total" in text

    out = cli.json("billing", "credit", "zoe", "10")
    assert out["user"] == uuid and out["amount"] == "10"
    assert cli.json("billing", "balance", "zoe", "--at", until) == {"userId": uuid, "balance": "8.000000"}
    assert cli("billing", "balance", "zoe", "--at", until)[0].strip() == f"{uuid}: 8.000000 credits"

    usage = cli.json("billing", "usage", "zoe", "--until", until)["usage"]
    assert usage == [{"resource": "pithos.diskspace", "instance": uuid, "quantity": "2.000000",
                      "unit": "GiB·h", "credits": "2.000000"}]
    events = cli.json("billing", "events", "zoe")
    # listed by event time: the commission is stamped t0 (1 s ahead), so either comes first
    assert sorted(e["resource"] for e in events) == ["billing.credit", "pithos.diskspace"]
    assert [e["occurred_us"] for e in events] == sorted(e["occurred_us"] for e in events)

    chart = tmp_path / "usage.svg"
    cli("billing", "chart", "zoe", "--until", until, "-O", str(chart))
    assert chart.read_bytes().startswith(b"<?xml")
    cli("billing", "chart", "zoe", "--until", until, "-O", str(tmp_path / "usage.png"))
    assert (tmp_path / "usage.png").read_bytes().startswith(b"\x89PNG")

    assert cli.json("billing", "replay", "--check")["ok"]
    assert "running totals equal the replay" in cli("billing", "replay", "--check")[0]


def test_replay_check_fails_on_tampered_totals_and_replay_repairs(cli: Cli) -> None:
    uuid = cli.json("user", "add", "yan")["uuid"]
    cli("billing", "prices", "set", "pithos.diskspace", "1")
    t0 = datetime.now(UTC) + timedelta(seconds=1)
    cli.host(_accepted(uuid, GiB, t0))
    cli.host(_accepted(uuid, -GiB, t0 + timedelta(hours=1)))

    async def tamper(host: Host) -> None:
        async with host.db.begin() as conn:
            await conn.execute(sa.update(tables.totals).values(credits="7"))

    cli.host(tamper)
    out, err = cli("billing", "replay", "--check", rc=9)
    assert "1 bills differ" in out and "'running': '7.000000', 'replayed': '1.000000'" in out
    assert err.startswith("archip: error: 1 bills differ from a replay")
    assert "rewritten" in cli("billing", "replay")[0]
    assert cli.json("billing", "replay", "--check")["ok"]


@pytest.mark.parametrize("args,words", [
    (["billing", "prices", "set", "pithos.diskspace", "-1"], "prices cannot be negative"),
    (["billing", "prices", "set", "pithos.bogus", "1"], "unknown resource 'pithos.bogus'"),
    (["billing", "prices", "set", "pithos.diskspace", "1", "--unit", "parsecs"], "bad unit"),
    (["billing", "prices", "set", "pithos.diskspace", "1", "--from", "2020-01-01"], "never retroactive"),
    (["billing", "prices", "set", "cyclades.vmtime", "1"], "priced per state"),
    (["billing", "bill", "zoe", "--month", "2026-13"], "bad month '2026-13'"),
    (["billing", "bill", "zoe", "--until", "soon"], "bad time 'soon'"),
    (["billing", "usage", "zoe", "--month", "13-2026"], "bad month"),
    (["billing", "credit", "zoe", "-5"], "cannot be negative"),
    (["billing", "credit", "zoe", "abc"], "bad amount"),
    (["billing", "events", "zoe", "--limit", "0"], "--limit must be positive"),
])
def test_bad_input_is_one_line_and_exit_2(cli: Cli, args: list[str], words: str) -> None:
    cli("user", "add", "zoe")
    out, err = cli(*args, rc=2)
    assert err.startswith("archip: error: ") and words in err and err.count("\n") == 1, err


def test_unknown_user_and_disabled_plugin(cli: Cli) -> None:
    _, err = cli("billing", "balance", "nobody", rc=3)
    assert "nobody" in err
    (cli.d / "archipelago.toml").write_text('[control]\nplugins = ["identity"]\n')
    _, err = cli("billing", "balance", "nobody", rc=15)
    assert "billing" in err and "not enabled" in err
