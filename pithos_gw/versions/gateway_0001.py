"""gateway: users, accounts, containers, versions, permissions, public, images,
account_blocks (adopts the tables of a gateway.db made before migrations existed).

Revision ID: gateway_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "gateway_0001"
down_revision = None
branch_labels = ("gateway",)
depends_on = None

# The schema of this revision, frozen here (pithos_gw/meta_tables.py is the live one).
metadata = sa.MetaData()
#: Text compared bytewise on both engines.
Name = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
#: 64-bit on PostgreSQL; INTEGER on SQLite, where only that makes a rowid (AUTOINCREMENT) key.
Serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

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


def upgrade() -> None:
    """Create the tables and indexes that do not exist yet; fill account_blocks once from
    every recorded version when it is new (a gateway.db older than block scoping)."""
    bind = op.get_bind()
    have = set(sa.inspect(bind).get_table_names())
    for table in metadata.sorted_tables:
        if table.name in have:
            continue
        table.create(bind)
        if table.name == "account_blocks" and "versions" in have:
            _fill_account_blocks(bind)
    for table in metadata.sorted_tables:
        existing = {i["name"] for i in sa.inspect(bind).get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in existing:
                index.create(bind)


def _fill_account_blocks(bind: sa.Connection) -> None:
    # Only a SQLite gateway.db can predate this table: SQLite's insert-or-ignore.
    from sqlalchemy.dialects.sqlite import insert

    from archipelago.hashing import ZERO_HASH

    zero = bytes.fromhex(ZERO_HASH)
    rows = bind.execute(sa.select(versions.c.account, versions.c.modified_by,
                                  versions.c.hashes)).all()
    for account, by, blob in rows:
        blocks = {blob[i : i + 32] for i in range(0, len(blob), 32)} - {zero}
        todo = [{"account": a, "hash": b} for a in {account, by} for b in blocks]
        if todo:
            bind.execute(insert(account_blocks).on_conflict_do_nothing(), todo)


def downgrade() -> None:
    """Drop the gateway's tables."""
    for table in reversed(metadata.sorted_tables):
        table.drop(op.get_bind(), checkfirst=True)
