"""echo: notes and seen events.

Revision ID: echo_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "echo_0001"
down_revision = None
branch_labels = ("echo",)
depends_on = None


def upgrade() -> None:
    """Create echo_notes and echo_seen."""
    op.create_table("echo_notes",
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                    sa.Column("text", sa.String(200), nullable=False))
    op.create_table("echo_seen", sa.Column("event_id", sa.String(64), primary_key=True))


def downgrade() -> None:
    """Drop them."""
    op.drop_table("echo_seen")
    op.drop_table("echo_notes")
