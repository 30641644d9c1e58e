"""`archip billing ...`: prices, credits, balances, bills, usage, events, replay, chart.

Everything runs in-process on the control database (no server needed); users are
named by name or uuid (resolved by identity).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from archipelago.errors import Corrupt, InvalidArgument
from control.billing.bill import Bill, rounded
from control.billing.periods import parse_month, parse_time
from control.context import print_json, wants_json
from control.host.clirun import run_plugin


def _run(args: argparse.Namespace, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    return run_plugin(args, "billing", fn)


def _month(text: str | None) -> str | None:
    if text is not None:
        parse_month(text)       # "2026-13" fails here, before the database is opened
    return text


def _until(text: str | None) -> Any:
    return parse_time(text) if text else None


def _prices_show(args: argparse.Namespace) -> int:
    from control.billing.api import price_dict

    prices = _run(args, lambda p: p.service.prices())
    rows = [price_dict(p) for p in prices]
    if wants_json(args):
        print_json(rows)
        return 0
    if not rows:
        print("no prices set: usage is counted but charged 0 credits")
    for r in rows:
        state = f" ({r['state']})" if r["state"] else ""
        project = f" project {r['project']}" if r["project"] else ""
        print(f"{r['resource']}{state:6} {r['price']:>12} credits per {r['unit']:8} "
              f"from {r['from']}{project}")
    return 0


def _prices_set(args: argparse.Namespace) -> int:
    from control.billing.api import price_dict

    start = parse_time(args.start) if args.start else None
    p = _run(args, lambda pl: pl.service.set_price(args.resource, args.price, args.unit, start,
                                                   args.state or "", args.project or ""))
    if wants_json(args):
        print_json(price_dict(p))
    else:
        print(f"{p.resource}{' ' + p.state if p.state else ''}: {p.price} credits per {p.unit.name} "
              f"from {p.effective.isoformat()}")
    return 0


def _credit(args: argparse.Namespace) -> int:
    async def go(plugin: Any) -> dict[str, Any]:
        user = await plugin.resolve_user(args.user)
        ev = await plugin.credit(user, args.amount, by="cli")
        return {"id": ev.id, "user": user, "amount": str(ev.value),
                "balance": str(rounded(await plugin.service.balance(user)))}

    doc = _run(args, go)
    if wants_json(args):
        print_json(doc)
    else:
        print(f"added {doc['amount']} credits to {doc['user']}: balance {doc['balance']}")
    return 0


def _balance(args: argparse.Namespace) -> int:
    at = _until(args.at)

    async def go(plugin: Any) -> dict[str, Any]:
        user = await plugin.resolve_user(args.user)
        return await plugin.service.balance_dict(user, at)

    doc = _run(args, go)
    if wants_json(args):
        print_json(doc)
    else:
        print(f"{doc['userId']}: {doc['balance']} credits")
    return 0


def print_bill(bill: Bill) -> None:
    """The bill as a table: one line per resource (and state), then the total."""
    d = bill.to_dict()
    print(f"bill of {d['user']} for {d['month']}: {d['from']} .. {d['until']}")
    if not d["lines"]:
        print("  no usage")
    for line in d["lines"]:
        name = line["resource"] + (f" ({line['state']})" if "state" in line else "")
        print(f"  {name:28} {line['quantity']:>16} {line['unit']:8} {line['credits']:>16} credits")
    print(f"  {'total':28} {'':>16} {'':8} {d['total']:>16} credits")
    if bill.credits_added:
        print(f"  credits added: {d['credits_added']}")


def _bill(args: argparse.Namespace) -> int:
    month, until = _month(args.month), _until(args.until)

    async def go(plugin: Any) -> Bill:
        return await plugin.service.bill(await plugin.resolve_user(args.user), month, until)

    bill = _run(args, go)
    if wants_json(args):
        print_json(bill.to_dict())
    else:
        print_bill(bill)
    return 0


def _usage(args: argparse.Namespace) -> int:
    month, until = _month(args.month), _until(args.until)

    async def go(plugin: Any) -> Any:
        return await plugin.service.usage(await plugin.resolve_user(args.user), month, until)

    period, lines = _run(args, go)
    rows = [line.to_dict() for line in lines]
    if wants_json(args):
        print_json({"month": period.month, "from": period.start.isoformat(),
                    "until": period.end.isoformat(), "usage": rows})
        return 0
    for r in rows:
        name = r["resource"] + (f" ({r['state']})" if "state" in r else "")
        print(f"{name:28} {r['instance']:38} {r['quantity']:>16} {r['unit']:8} {r['credits']:>14} credits")
    return 0


def _events(args: argparse.Namespace) -> int:
    month = _month(args.month)
    if args.limit <= 0:
        raise InvalidArgument(f"--limit must be positive, not {args.limit}")

    async def go(plugin: Any) -> list[Any]:
        user = await plugin.resolve_user(args.user)
        start = end = None
        if month:
            start, end = parse_month(month)
        return await plugin.service.events(user, start, end, args.limit)

    found = _run(args, go)
    if wants_json(args):
        print_json([e.to_dict() for e in found])
        return 0
    for e in found:
        print(f"{e.occurred.isoformat()} {e.resource:22} {e.instance[:36]:36} {e.value:>16} {e.type} {e.id}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    report = _run(args, lambda p: p.service.replay(check=args.check))
    doc = report.to_dict()
    if wants_json(args):
        print_json(doc)
    else:
        print(f"replayed {doc['events']} events over {doc['keys']} keys: "
              + ("running totals equal the replay" if doc["ok"] else
                 f"{len(doc['differences'])} bills differ"
                 + (" (running totals rewritten from the log)" if doc["rewritten"] else "")))
        for d in doc["differences"]:
            print(f"  {d}")
    if args.check and not doc["ok"]:
        raise Corrupt(f"{len(doc['differences'])} bills differ from a replay of the event log "
                      "(run `archip billing replay` to rewrite the running totals)")
    return 0


def _chart(args: argparse.Namespace) -> int:
    from control.billing.chart import render

    month, until = _month(args.month), _until(args.until)

    async def go(plugin: Any) -> Any:
        return await plugin.service.daily(await plugin.resolve_user(args.user), month, until)

    period, days, series = _run(args, go)
    fmt = "png" if args.output.endswith(".png") else "svg"
    image = render(f"Charges per resource, {period.month}", days, series, fmt)
    if args.output == "-":
        sys.stdout.buffer.write(image)
    else:
        Path(args.output).write_bytes(image)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `archip billing`."""
    p = subparsers.add_parser("billing", help="usage charges, prices, credits and bills (Aquarium)")
    sub = p.add_subparsers(title="billing commands", metavar="COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])

    pr = sub.add_parser("prices", help="the price table")
    prs = pr.add_subparsers(title="prices commands", metavar="COMMAND", parser_class=type(p))
    pr.set_defaults(func=_prices_show)
    prs.add_parser("show", help="every price version").set_defaults(func=_prices_show)
    ps = prs.add_parser("set", help="add a price version (from now or a later --from)")
    ps.add_argument("resource", metavar="RESOURCE")
    ps.add_argument("price", metavar="PRICE", help="credits per unit (a decimal >= 0)")
    ps.add_argument("--unit", help="e.g. GiB*h, MiB*h, cpu*h, h (default: the resource's bill unit)")
    ps.add_argument("--from", dest="start", metavar="TIME", help="ISO time or now+N(s|m|h|d); default now")
    ps.add_argument("--state", choices=("on", "off"), help="state priced (on/off resources)")
    ps.add_argument("--project", help="a project's own price list (default: the default list)")
    ps.set_defaults(func=_prices_set)

    c = sub.add_parser("credit", help="add credits to a user's wallet")
    c.add_argument("user", metavar="USER")
    c.add_argument("amount", metavar="AMOUNT")
    c.set_defaults(func=_credit)

    b = sub.add_parser("balance", help="credits added minus charges")
    b.add_argument("user", metavar="USER")
    b.add_argument("--at", metavar="TIME", help="charge open usage up to TIME (default now)")
    b.set_defaults(func=_balance)

    for name, helptext, fn in (("bill", "a user's bill of one month", _bill),
                               ("usage", "per resource and instance usage of one month", _usage),
                               ("chart", "chart (SVG/PNG) of the charges per resource over a month", _chart)):
        x = sub.add_parser(name, help=helptext)
        x.add_argument("user", metavar="USER")
        x.add_argument("--month", metavar="YYYY-MM", help="default: the month of --until, or now")
        x.add_argument("--until", metavar="TIME",
                       help="charge open usage up to TIME (ISO or now+2h; default now or the month end)")
        if name == "chart":
            x.add_argument("-O", "--output", default="-", metavar="FILE",
                           help="SVG file, or PNG when FILE ends in .png (default: SVG on stdout)")
        x.set_defaults(func=fn)

    e = sub.add_parser("events", help="a user's usage events")
    e.add_argument("user", metavar="USER")
    e.add_argument("--month", metavar="YYYY-MM")
    e.add_argument("--limit", type=int, default=1000)
    e.set_defaults(func=_events)

    r = sub.add_parser("replay", help="recompute every bill from the event log")
    r.add_argument("--check", action="store_true",
                   help="only compare with the running totals (exit code of Corrupt when they differ)")
    r.set_defaults(func=_replay)
