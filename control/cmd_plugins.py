"""The `archip` subcommands of every installed control-plane plugin (entry points
``archipelago.control``), plus `archip db upgrade|status` for the control database."""

from __future__ import annotations

import argparse
import sys

from control.context import print_json, wants_json
from control.host import registry
from control.host.clirun import run_host
from control.host.host import Host


def _upgrade(args: argparse.Namespace) -> int:
    """Run the migrations of the enabled plugins (as every server start does)."""
    async def go(host: Host) -> dict[str, dict[str, str | None]]:
        return await host.migrator.status(host.db)

    status = run_host(args, go)
    if wants_json(args):
        print_json(status)
    else:
        for branch, st in status.items():
            print(f"{branch:12} {st['current']}")
    return 0


def _status(args: argparse.Namespace) -> int:
    """Show the database URL and the revision of each enabled branch."""
    async def go(host: Host) -> dict[str, object]:
        return {"url": host.db.engine.url.render_as_string(hide_password=True),
                "plugins": list(host.plugins),
                "branches": await host.migrator.status(host.db),
                "outbox_pending": await host.events.pending()}

    doc = run_host(args, go)
    if wants_json(args):
        print_json(doc)
    else:
        print(f"database  {doc['url']}")
        print(f"plugins   {', '.join(doc['plugins']) or '-'}")  # type: ignore[arg-type]
        for branch, st in doc["branches"].items():  # type: ignore[attr-defined]
            print(f"  {branch:12} {st['current']} (head {st['head']})")
        print(f"outbox    {doc['outbox_pending']} undelivered")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `db` and every installed plugin's commands."""
    p = subparsers.add_parser("db", help="the control database (migrations)")
    sub = p.add_subparsers(title="db commands", metavar="COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])
    sub.add_parser("upgrade", help="migrate to the newest schema").set_defaults(func=_upgrade)
    sub.add_parser("status", help="database URL, schema revisions, outbox").set_defaults(
        func=_status)
    for name in sorted(registry.installed()):
        try:
            cls = registry.load_class(name)
        except Exception as e:  # noqa: BLE001 -- one broken plugin must not take the CLI down
            print(f"archip: warning: cannot load plugin {name}: {e}", file=sys.stderr)
            continue
        cls.register_cli(subparsers)
