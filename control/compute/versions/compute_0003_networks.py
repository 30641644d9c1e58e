"""compute: networks and ports (NICs) with their fixed addresses and firewall profiles.

Revision ID: compute_0003
Revises: compute_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "compute_0003"
down_revision = "compute_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create compute_networks and compute_ports."""
    op.create_table(
        "compute_networks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("cidr", sa.String(43), nullable=False),
        sa.Column("gateway", sa.String(39), nullable=False),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_compute_networks_user_id", "compute_networks", ["user_id"])
    op.create_table(
        "compute_ports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("network_id", sa.Integer, sa.ForeignKey("compute_networks.id"),
                  nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("server_id", sa.String(36), sa.ForeignKey("compute_servers.id"),
                  nullable=True),
        sa.Column("mac", sa.String(17), nullable=False, unique=True),
        sa.Column("ip", sa.String(39), nullable=False),
        sa.Column("firewall", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("network_id", "ip", name="uq_compute_ports_network_ip"),
    )
    op.create_index("ix_compute_ports_network_id", "compute_ports", ["network_id"])
    op.create_index("ix_compute_ports_server_id", "compute_ports", ["server_id"])


def downgrade() -> None:
    """Drop both tables (ports first: they point at networks)."""
    op.drop_table("compute_ports")
    op.drop_table("compute_networks")
