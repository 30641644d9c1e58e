"""Alembic migrations of the gateway's metadata (pithos_gw/versions, branch "gateway",
its own version table so that it can share a PostgreSQL database with the control plane):
run by every MetaStore.open() and shown by `archip db status`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from archipelago.db import Database
from archipelago.errors import ConfigError

logging.getLogger("alembic").setLevel(logging.WARNING)
VERSION_TABLE = "gateway_alembic_version"
#: pg_advisory_xact_lock key: servers starting together migrate one at a time.
_MIGRATE_LOCK = 0x61726368_6777  # "archgw"


def _config() -> AlembicConfig:
    here = Path(__file__).parent
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(here / "migrations"))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(here / "versions"))
    cfg.attributes["version_table"] = VERSION_TABLE
    return cfg


def _serialise(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATE_LOCK})")


async def upgrade(db: Database) -> None:
    """Bring the gateway's tables to the newest revision (one transaction; idempotent)."""
    cfg = _config()

    def up(conn: sa.Connection) -> None:
        _serialise(conn)
        cfg.attributes["connection"] = conn
        try:
            command.upgrade(cfg, "gateway@head")
        except CommandError as e:
            raise ConfigError(f"gateway metadata migration failed: {e}") from None

    await db.run_sync(up)


async def status(db: Database) -> dict[str, Any]:
    """{"current": revision or None, "head": revision} of the gateway's branch."""
    script = ScriptDirectory.from_config(_config())

    def q(conn: sa.Connection) -> dict[str, Any]:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        heads = ctx.get_current_heads()
        return {"current": heads[0] if heads else None,
                "head": script.get_current_head()}

    async with db.read() as conn:
        return dict(await conn.run_sync(q))
