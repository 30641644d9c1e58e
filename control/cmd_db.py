"""`archip db upgrade|status|copy`: the metadata databases of an instance (the control
plane's and the gateway's; one PostgreSQL database for both when [database] url is set)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import sqlalchemy as sa

from archipelago.db import Database
from archipelago.errors import Busy, ConfigError
from control.context import get_config, get_instance, print_json, wants_json
from control.host.clirun import run_host
from control.host.host import Host

#: Rows per INSERT when copying.
BATCH = 1000


def _gateway_url(args: argparse.Namespace) -> str:
    from pithos_gw.server import meta_url

    inst = get_instance(args)
    return meta_url(inst, get_config(args, inst))


def _upgrade(args: argparse.Namespace) -> int:
    """Run the migrations of the enabled plugins and of the gateway (as a server start does)."""
    async def go(host: Host) -> dict[str, Any]:
        out: dict[str, Any] = dict(await host.migrator.status(host.db))
        from pithos_gw.server import meta_upgrade

        out["gateway"] = await meta_upgrade(_gateway_url(args))
        return out

    status = run_host(args, go)
    if wants_json(args):
        print_json(status)
    else:
        for branch, st in status.items():
            print(f"{branch:12} {st['current']}")
    return 0


def _status(args: argparse.Namespace) -> int:
    """Show the database URLs and the revision of each branch (the gateway's too)."""
    from pithos_gw.server import meta_status

    gw_url = _gateway_url(args)

    async def go(host: Host) -> dict[str, object]:
        return {"url": host.db.engine.url.render_as_string(hide_password=True),
                "gateway_url": sa.engine.make_url(gw_url).render_as_string(hide_password=True),
                "plugins": list(host.plugins),
                "branches": {**await host.migrator.status(host.db),
                             "gateway": await meta_status(gw_url)},
                "outbox_pending": await host.events.pending()}

    doc = run_host(args, go)
    if wants_json(args):
        print_json(doc)
    else:
        print(f"database  {doc['url']}")
        if doc["gateway_url"] != doc["url"]:
            print(f"gateway   {doc['gateway_url']}")
        print(f"plugins   {', '.join(doc['plugins']) or '-'}")  # type: ignore[arg-type]
        for branch, st in doc["branches"].items():  # type: ignore[attr-defined]
            print(f"  {branch:12} {st['current']} (head {st['head']})")
        print(f"outbox    {doc['outbox_pending']} undelivered")
    return 0


async def copy_rows(src: Database, dst: Database) -> dict[str, int]:
    """Copy every table ``dst`` has (migrated already) from ``src``: rows per table.
    ConfigError when a target table already holds rows (a copy goes into an empty schema)."""
    def reflect(conn: sa.Connection) -> sa.MetaData:
        md = sa.MetaData()
        md.reflect(conn)
        return md

    async with src.read() as conn:
        src_md = await conn.run_sync(reflect)
    async with dst.read() as conn:
        dst_md = await conn.run_sync(reflect)
    counts: dict[str, int] = {}
    async with dst.begin() as out:
        for table in dst_md.sorted_tables:
            name = table.name
            if "alembic_version" in name or name not in src_md.tables:
                continue
            if (await out.execute(sa.select(sa.func.count()).select_from(table))).scalar():
                raise ConfigError(f"target table {name!r} is not empty: copy into a new database")
            cols = [c.name for c in table.columns if c.name in src_md.tables[name].columns]
            source = src_md.tables[name]
            n = 0
            async with src.read() as conn:
                result = await conn.stream(sa.select(*[source.c[c] for c in cols]))
                async for rows in result.partitions(BATCH):
                    await out.execute(table.insert(), [dict(zip(cols, r, strict=True))
                                                       for r in rows])
                    n += len(rows)
            counts[name] = n
            if dst.engine.dialect.name == "postgresql":
                await _bump_sequences(out, table)
    return counts


async def _bump_sequences(conn: Any, table: sa.Table) -> None:
    """Rows came with their serials: move the column's sequence past them."""
    for col in table.primary_key.columns:
        if not isinstance(col.type, sa.Integer):
            continue
        seq = (await conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                                  {"t": table.name, "c": col.name})).scalar()
        if seq:
            await conn.execute(sa.text(
                f'SELECT setval(:s, coalesce((SELECT max("{col.name}") FROM "{table.name}"), 0) '
                f"+ 1, false)"), {"s": seq})


def _copy(args: argparse.Namespace) -> int:
    """Copy this instance's databases (control and gateway) into ``--to URL``, after
    migrating its schema; then point [database] url at it."""
    from control.cmd_gateway import gateway_state
    from pithos_gw.server import meta_schema_upgrade

    inst = get_instance(args)
    if inst.daemon_running() or gateway_state(inst) is not None:
        # rows written during the copy would be missing from the target
        raise Busy("the daemon or the API server of this instance is running: stop it "
                   "(archip daemon stop / gateway stop) before copying its databases")
    gw_src = _gateway_url(args)

    async def go(host: Host) -> dict[str, Any]:
        dst = Database(args.to, "target database", 2)
        try:
            await host.migrator.upgrade(dst)
            await meta_schema_upgrade(dst)
            sources = list(dict.fromkeys([host.db.url, gw_src]))
            if args.to in sources:
                raise ConfigError("the target is the database being copied")
            counts: dict[str, int] = {}
            for url in sources:
                src = host.db if url == host.db.url else Database(url, "gateway's database", 1)
                try:
                    counts.update(await copy_rows(src, dst))
                finally:
                    if src is not host.db:
                        await src.close()
            return counts
        finally:
            await dst.close()

    counts = run_host(args, go)
    if wants_json(args):
        print_json({"to": sa.engine.make_url(args.to).render_as_string(hide_password=True),
                    "rows": counts})
    else:
        for name, n in counts.items():
            print(f"{name:24} {n}")
        print(f"copied {sum(counts.values())} rows; now set [database] url to the target",
              file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `archip db`."""
    p = subparsers.add_parser("db", help="the metadata databases (migrations, copy)")
    sub = p.add_subparsers(title="db commands", metavar="COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])
    sub.add_parser("upgrade", help="migrate to the newest schema").set_defaults(func=_upgrade)
    sub.add_parser("status", help="database URLs, schema revisions, outbox").set_defaults(
        func=_status)
    c = sub.add_parser("copy", help="copy this instance's rows into an empty database "
                       "(e.g. SQLite -> PostgreSQL), migrating its schema first")
    c.add_argument("--to", required=True, metavar="URL", help="SQLAlchemy URL of the target")
    c.set_defaults(func=_copy)
