"""The control database: archipelago.db's Database over [database] url, by default the
SQLite file DATA_DIR/control.db (see archipelago/db.py for the engine and its rules)."""

from __future__ import annotations

from archipelago.db import EVENTS_KEY, AfterCommit, Database, sqlite_url
from archipelago.instance import Instance

__all__ = ["EVENTS_KEY", "AfterCommit", "Database", "default_url", "url_of"]


def default_url(inst: Instance) -> str:
    """sqlite+aiosqlite:///DATA_DIR/control.db."""
    return sqlite_url(inst.data_dir / "control.db")


def url_of(inst: Instance, configured: str) -> str:
    """The configured database URL, or the default SQLite file of the instance."""
    return configured or default_url(inst)
