"""billing: event log, price versions, running state and totals.

Revision ID: billing_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "billing_0001"
down_revision = None
branch_labels = ("billing",)
depends_on = None
ID = 200


def upgrade() -> None:
    """Create the billing tables."""
    op.create_table(
        "billing_events",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(ID), nullable=False),
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("instance", sa.String(ID), nullable=False),
        sa.Column("project", sa.String(ID), nullable=False),
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("absolute", sa.Boolean, nullable=False),
        sa.Column("occurred_us", sa.BigInteger, nullable=False),
        sa.Column("received_us", sa.BigInteger, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("billing_events_key", "billing_events",
                    ["user_id", "resource", "instance", "occurred_us"])
    op.create_index("billing_events_user", "billing_events", ["user_id", "occurred_us"])
    op.create_table(
        "billing_prices",
        sa.Column("resource", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(8), primary_key=True),
        sa.Column("project", sa.String(ID), primary_key=True),
        sa.Column("effective_us", sa.BigInteger, primary_key=True),
        sa.Column("price", sa.String(64), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("set_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "billing_state",
        sa.Column("user_id", sa.String(ID), primary_key=True),
        sa.Column("resource", sa.String(64), primary_key=True),
        sa.Column("instance", sa.String(ID), primary_key=True),
        sa.Column("last_us", sa.BigInteger, nullable=False),
        sa.Column("last_id", sa.String(ID), nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("project", sa.String(ID), nullable=False),
    )
    op.create_table(
        "billing_totals",
        sa.Column("user_id", sa.String(ID), primary_key=True),
        sa.Column("resource", sa.String(64), primary_key=True),
        sa.Column("instance", sa.String(ID), primary_key=True),
        sa.Column("state", sa.String(8), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("quantity", sa.Text, nullable=False),
        sa.Column("credits", sa.Text, nullable=False),
    )


def downgrade() -> None:
    """Drop the billing tables."""
    for name in ("billing_totals", "billing_state", "billing_prices", "billing_events"):
        op.drop_table(name)
