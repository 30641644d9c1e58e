"""Alembic migrations of the control database: one version branch per plugin (labelled with
its name) plus the host's own ("host"), upgraded to their heads on API-server start, at
every CLI command that opens the database, and by `archip db upgrade`."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from archipelago.errors import ConfigError
from control.host.db import Database

# Alembic says "Context impl SQLiteImpl" at INFO on every start: keep the logs for news.
logging.getLogger("alembic").setLevel(logging.WARNING)
HOST_BRANCH = "host"
HOST_VERSIONS = "control.host.versions"


def package_dir(dotted: str) -> str:
    """The directory of a package named by its dotted path."""
    spec = importlib.util.find_spec(dotted)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"migrations package {dotted!r} not found")
    return str(list(spec.submodule_search_locations)[0])


def alembic_config(locations: list[str]) -> AlembicConfig:
    """An Alembic config over the host's env.py and the given version directories."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(locations))
    return cfg


class Migrator:
    """Upgrades the branches of the enabled plugins; knows every installed one's revisions."""

    def __init__(self, branches: dict[str, str], known: list[str]) -> None:
        #: branch label -> dotted versions package, for the branches to upgrade
        self.branches = {HOST_BRANCH: HOST_VERSIONS, **branches}
        # Revisions of installed-but-disabled plugins stay resolvable: their rows in
        # alembic_version must not make Alembic fail.
        dirs = [package_dir(p) for p in dict.fromkeys([*self.branches.values(), *known])]
        self.config = alembic_config(dirs)

    def _run(self, conn: sa.Connection, fn: Any, *args: Any) -> Any:
        self.config.attributes["connection"] = conn
        try:
            return fn(self.config, *args)
        except CommandError as e:
            raise ConfigError(f"database migration failed: {e}") from None
        finally:
            self.config.attributes.pop("connection", None)

    async def upgrade(self, db: Database) -> None:
        """Bring every branch to its head (one transaction; idempotent)."""
        def up(conn: sa.Connection) -> None:
            for label in self.branches:
                self._run(conn, command.upgrade, f"{label}@head")

        await db.run_sync(up)

    async def status(self, db: Database) -> dict[str, dict[str, str | None]]:
        """branch -> {"current": revision or None, "head": revision}."""
        script = ScriptDirectory.from_config(self.config)

        def q(conn: sa.Connection) -> dict[str, dict[str, str | None]]:
            heads = set(MigrationContext.configure(conn).get_current_heads())
            out: dict[str, dict[str, str | None]] = {}
            for label in self.branches:
                head = script.get_revision(f"{label}@head")
                cur = None
                for rev in script.iterate_revisions(f"{label}@head", "base"):
                    if rev.revision in heads:
                        cur = rev.revision
                        break
                out[label] = {"current": cur, "head": head.revision if head else None}
            return out

        async with db.read() as conn:
            return dict(await conn.run_sync(q))


async def schema_diff(db: Database, metadata: sa.MetaData) -> list[Any]:
    """Differences between the migrated database and ``metadata`` (empty when the plugin's
    migrations create exactly its tables): for each plugin's tests."""
    from alembic.autogenerate import compare_metadata

    names = set(metadata.tables)

    def q(conn: sa.Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={
            "include_name": lambda name, kind, _p: kind != "table" or name in names})
        return list(compare_metadata(ctx, metadata))

    async with db.read() as conn:
        return list(await conn.run_sync(q))
