"""gateway: user keys stored as their sha256 (archipelago.hashing.token_hash), never as
themselves; keys of an older gateway.db are hashed in place.

Revision ID: gateway_0002
Revises: gateway_0001
"""

from __future__ import annotations

import hashlib
import re

import sqlalchemy as sa
from alembic import op

revision = "gateway_0002"
down_revision = "gateway_0001"
branch_labels = None
depends_on = None

users = sa.table("users", sa.column("account", sa.Text), sa.column("key", sa.Text))
_HASHED = re.compile(r"[0-9a-f]{64}")


def upgrade() -> None:
    """Replace every plain key by its sha256 hex (keys are URL-safe base64, never 64 hex)."""
    bind = op.get_bind()
    for account, key in bind.execute(sa.select(users.c.account, users.c.key)).all():
        if not _HASHED.fullmatch(key):
            bind.execute(users.update().where(users.c.account == account)
                         .values(key=hashlib.sha256(key.encode()).hexdigest()))


def downgrade() -> None:
    """Nothing to undo: a hash cannot be turned back into its key (users keep theirs)."""
