"""The compute plugin's Alembic branch creates exactly its tables (SQLite here)."""

from __future__ import annotations

from pathlib import Path

from control.compute import tables
from control.host.db import Database
from control.host.migrate import Migrator, schema_diff


async def test_migrations_create_exactly_the_tables(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    try:
        m = Migrator({"compute": "control.compute.versions"}, [])
        await m.upgrade(db)
        await m.upgrade(db)  # idempotent
        assert await schema_diff(db, tables.metadata) == []
        st = await m.status(db)
        assert st["compute"]["current"] == st["compute"]["head"] == "compute_0002"
    finally:
        await db.close()
