"""The gateway's metadata tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Names sort bytewise as Swift lists them: on PostgreSQL the name columns use the "C"
collation (SQLite's default BINARY already compares bytes). ``versions.serial`` grows
monotonically (AUTOINCREMENT on SQLite, a sequence on PostgreSQL) and is never reused:
the newest version of a path has the largest serial.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()
#: Text compared bytewise on both engines.
Name = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
#: 64-bit on PostgreSQL; INTEGER on SQLite, where only that makes a rowid (AUTOINCREMENT) key.
Serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NORMAL, HISTORY, DELETED = 0, 1, 2

users = sa.Table(
    "users", metadata,
    sa.Column("account", Name, primary_key=True),
    sa.Column("key", sa.Text, nullable=False, unique=True),
    sa.Column("created", sa.Float, nullable=False),
)
accounts = sa.Table(
    "accounts", metadata,
    sa.Column("name", Name, primary_key=True),
    sa.Column("meta", sa.Text, nullable=False, server_default="{}"),
    sa.Column("groups", sa.Text, nullable=False, server_default="{}"),
    sa.Column("mtime", sa.Float, nullable=False),
)
containers = sa.Table(
    "containers", metadata,
    sa.Column("account", Name, primary_key=True),
    sa.Column("name", Name, primary_key=True),
    sa.Column("meta", sa.Text, nullable=False, server_default="{}"),
    sa.Column("policy", sa.Text, nullable=False, server_default="{}"),
    sa.Column("mtime", sa.Float, nullable=False),
)
versions = sa.Table(
    "versions", metadata,
    sa.Column("serial", Serial, primary_key=True, autoincrement=True),
    sa.Column("account", Name, nullable=False),
    sa.Column("container", Name, nullable=False),
    sa.Column("name", Name, nullable=False),
    sa.Column("uuid", sa.Text, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("hashes", sa.LargeBinary, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Column("checksum", sa.Text, nullable=False),
    sa.Column("ctype", sa.Text, nullable=False),
    sa.Column("meta", sa.Text, nullable=False),
    sa.Column("mtime", sa.Float, nullable=False),
    sa.Column("modified_by", sa.Text, nullable=False),
    sa.Column("cluster", sa.Integer, nullable=False),
    sqlite_autoincrement=True,
)
sa.Index("versions_path", versions.c.account, versions.c.container, versions.c.name,
         versions.c.serial)
# At most one current version per path: a second concurrent writer queues (or fails).
sa.Index("versions_current", versions.c.account, versions.c.container, versions.c.name,
         unique=True, sqlite_where=versions.c.cluster == 0,
         postgresql_where=versions.c.cluster == 0)
sa.Index("versions_hash", versions.c.hash, versions.c.bytes)
permissions = sa.Table(
    "permissions", metadata,
    sa.Column("account", Name, primary_key=True),
    sa.Column("container", Name, primary_key=True),
    sa.Column("name", Name, primary_key=True),
    sa.Column("read", sa.Text, nullable=False),
    sa.Column("write", sa.Text, nullable=False),
)
public = sa.Table(
    "public", metadata,
    sa.Column("token", sa.Text, primary_key=True),
    sa.Column("account", Name, nullable=False),
    sa.Column("container", Name, nullable=False),
    sa.Column("name", Name, nullable=False),
    sa.UniqueConstraint("account", "container", "name"),
)
images = sa.Table(
    "images", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("info", sa.Text, nullable=False),
)
account_blocks = sa.Table(
    "account_blocks", metadata,
    sa.Column("account", Name, primary_key=True),
    sa.Column("hash", sa.LargeBinary, primary_key=True),
    sqlite_with_rowid=False,
)
#: Creation order (foreign-key free, but copies and migrations keep it).
TABLES = [users, accounts, containers, versions, permissions, public, images, account_blocks]


def insert_of(db: sa.Connection) -> Any:
    """The dialect's insert() (both have on_conflict_do_nothing/do_update)."""
    if db.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def upsert(db: sa.Connection, table: sa.Table, key: dict[str, Any], values: dict[str, Any],
           update: bool = True) -> bool:
    """Insert ``key + values``, or on a conflicting key update ``values`` (or with
    ``update=False`` leave the row alone); True when a row was inserted."""
    stmt = insert_of(db)(table).values(**key, **values)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_=values)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    return bool(db.execute(stmt).rowcount)


#: id(statement) -> (SQL text, parameter names in order, compiled parameter values).
_SQLITE: dict[int, tuple[str, tuple[str, ...], dict[str, Any], Any]] = {}


def _sqlite_sql(db: sa.Connection, stmt: Any) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    hit = _SQLITE.get(id(stmt))
    if hit is None or hit[3] is not stmt:
        c = stmt.compile(dialect=db.dialect)
        hit = _SQLITE[id(stmt)] = (str(c), tuple(c.positiontup or ()), dict(c.params), stmt)
    return hit[0], hit[1], hit[2]


def run(db: sa.Connection, stmt: Any, params: dict[str, Any]) -> Any:
    """Execute a statement built once at import (the per-request queries): on SQLite
    straight on the pysqlite connection, compiled once (SQLAlchemy's per-call work costs
    more than the query there), else through SQLAlchemy. Answers a cursor (fetchone,
    fetchall, rowcount); rows are plain tuples."""
    if db.dialect.name != "sqlite":
        return db.execute(stmt, params)
    sql, names, defaults = _sqlite_sql(db, stmt)
    raw = db.connection.driver_connection
    return raw.execute(sql, [params[n] if n in params else defaults[n] for n in names])


def run_many(db: sa.Connection, stmt: Any, rows: list[dict[str, Any]]) -> None:
    """``run`` for many parameter sets (executemany)."""
    if db.dialect.name != "sqlite":
        db.execute(stmt, rows)
        return
    sql, names, defaults = _sqlite_sql(db, stmt)
    raw = db.connection.driver_connection
    raw.executemany(sql, [[r[n] if n in r else defaults[n] for n in names] for r in rows])
