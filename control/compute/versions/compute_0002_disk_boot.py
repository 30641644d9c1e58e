"""compute: the boot files (kernel/ramdisk images) of a disk's content, so that a server
booted from a snapshot or a volume of an AKI/ARI image boots with -kernel/-initrd too.

Revision ID: compute_0002
Revises: compute_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "compute_0002"
down_revision = "compute_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add compute_disks.kernel_image and ramdisk_image (NULL: boots from its disk)."""
    # plain ADD COLUMN (nullable, no default): no table copy, also on SQLite
    op.add_column("compute_disks", sa.Column("kernel_image", sa.String(64), nullable=True))
    op.add_column("compute_disks", sa.Column("ramdisk_image", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop the two columns (batch mode: SQLite copies the table)."""
    with op.batch_alter_table("compute_disks") as b:
        b.drop_column("ramdisk_image")
        b.drop_column("kernel_image")
