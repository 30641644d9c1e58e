"""identity: users, tokens, projects, members, resources, limits, holdings, commissions.

Revision ID: identity_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "identity_0001"
down_revision = None
branch_labels = ("identity",)
depends_on = None


def upgrade() -> None:
    """Create the identity tables."""
    op.create_table(
        "identity_users",
        sa.Column("uuid", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("email", sa.String(256), nullable=False, server_default=""),
        sa.Column("password", sa.String(256), nullable=True),
        sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("provider", sa.String(32), nullable=False, server_default="local"),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "identity_tokens",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("identity_users.uuid", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
    )
    op.create_index("ix_identity_tokens_user", "identity_tokens", ["user"])
    op.create_index("ix_identity_tokens_expires", "identity_tokens", ["expires"])
    op.create_table(
        "identity_projects",
        sa.Column("uuid", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("system", sa.Boolean, nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "identity_members",
        sa.Column("project", sa.String(64),
                  sa.ForeignKey("identity_projects.uuid", ondelete="CASCADE"), primary_key=True),
        sa.Column("user", sa.String(64),
                  sa.ForeignKey("identity_users.uuid", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_identity_members_user", "identity_members", ["user"])
    op.create_table(
        "identity_resources",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("unit", sa.String(32), nullable=False, server_default=""),
        sa.Column("description", sa.String(256), nullable=False, server_default=""),
        sa.Column("service", sa.String(64), nullable=False, server_default=""),
        sa.Column("default_limit", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "identity_limits",
        sa.Column("project", sa.String(64),
                  sa.ForeignKey("identity_projects.uuid", ondelete="CASCADE"), primary_key=True),
        sa.Column("resource", sa.String(128), primary_key=True),
        sa.Column("project_limit", sa.BigInteger, nullable=False),
        sa.Column("member_limit", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "identity_holdings",
        sa.Column("holder", sa.String(80), primary_key=True),
        sa.Column("source", sa.String(80), primary_key=True),
        sa.Column("resource", sa.String(128), primary_key=True),
        sa.Column("limit", sa.BigInteger, nullable=False),
        sa.Column("usage_min", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("usage_max", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "identity_commissions",
        sa.Column("serial", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False, server_default=""),
        sa.Column("issue_time", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("resolved", sa.Float, nullable=True),
    )
    op.create_index("ix_identity_commissions_state", "identity_commissions", ["state"])
    op.create_table(
        "identity_provisions",
        sa.Column("serial", sa.Integer,
                  sa.ForeignKey("identity_commissions.serial", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("holder", sa.String(80), nullable=False),
        sa.Column("source", sa.String(80), nullable=False),
        sa.Column("resource", sa.String(128), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    """Drop the identity tables."""
    for t in ("identity_provisions", "identity_commissions", "identity_holdings",
              "identity_limits", "identity_resources", "identity_members", "identity_projects",
              "identity_tokens", "identity_users"):
        op.drop_table(t)
