"""compute: flavors, servers, disks.

Revision ID: compute_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "compute_0001"
down_revision = None
branch_labels = ("compute",)
depends_on = None


def upgrade() -> None:
    """Create compute_flavors, compute_servers, compute_disks."""
    op.create_table(
        "compute_flavors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("ram", sa.Integer, nullable=False),
        sa.Column("disk", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "compute_servers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("flavor_id", sa.Integer, sa.ForeignKey("compute_flavors.id"), nullable=False),
        sa.Column("image_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("kernel_image", sa.String(64), nullable=True),
        sa.Column("ramdisk_image", sa.String(64), nullable=True),
        sa.Column("kernel_args", sa.Text, nullable=False),
        sa.Column("fault", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "compute_disks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("server_id", sa.String(36), sa.ForeignKey("compute_servers.id"),
                  nullable=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("volume", sa.String(96), nullable=False, unique=True),
        sa.Column("node", sa.String(16), nullable=False),
        sa.Column("boot_index", sa.Integer, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("source_type", sa.String(16), nullable=False),
        sa.Column("delete_on_termination", sa.Boolean, nullable=False),
        sa.Column("charged", sa.Boolean, nullable=False),
    )
    op.create_index("ix_compute_servers_user_id", "compute_servers", ["user_id"])
    op.create_index("ix_compute_disks_server_id", "compute_disks", ["server_id"])


def downgrade() -> None:
    """Drop the compute tables."""
    op.drop_table("compute_disks")
    op.drop_table("compute_servers")
    op.drop_table("compute_flavors")
