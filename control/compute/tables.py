"""The compute plugin's tables (SQLAlchemy Core; created by versions/compute_0001..0003)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

flavors = sa.Table(
    "compute_flavors", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("vcpus", sa.Integer, nullable=False),
    sa.Column("ram", sa.Integer, nullable=False),        # MiB
    sa.Column("disk", sa.Integer, nullable=False),       # GiB
    sa.Column("created_at", sa.Float, nullable=False),
)

servers = sa.Table(
    "compute_servers", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False, index=True),
    sa.Column("flavor_id", sa.Integer, sa.ForeignKey("compute_flavors.id"), nullable=False),
    sa.Column("image_id", sa.String(64), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("kernel_image", sa.String(64), nullable=True),
    sa.Column("ramdisk_image", sa.String(64), nullable=True),
    sa.Column("kernel_args", sa.Text, nullable=False, default=""),
    sa.Column("fault", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

#: Volumes compute made or attached: owned by user_id, attached to server_id (NULL once
#: detached), boot disk first (boot_index 0); node = qemu block node name.
disks = sa.Table(
    "compute_disks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("server_id", sa.String(36), sa.ForeignKey("compute_servers.id"), nullable=True,
              index=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("volume", sa.String(96), nullable=False, unique=True),
    sa.Column("node", sa.String(16), nullable=False),
    sa.Column("boot_index", sa.Integer, nullable=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("source_type", sa.String(16), nullable=False),
    sa.Column("delete_on_termination", sa.Boolean, nullable=False),
    sa.Column("charged", sa.Boolean, nullable=False, default=False),
    # boot files of the content (compute_0002): what a server booted from it runs with
    sa.Column("kernel_image", sa.String(64), nullable=True),
    sa.Column("ramdisk_image", sa.String(64), nullable=True),
)

#: Networks (compute_0003): one bridge each in the instance's network namespace; cidr is
#: IPv4, gateway = the bridge's address (where dnsmasq answers DHCP).
networks = sa.Table(
    "compute_networks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False, index=True),
    sa.Column("cidr", sa.String(43), nullable=False),
    sa.Column("gateway", sa.String(39), nullable=False),
    sa.Column("public", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

#: Ports (NICs, compute_0003): a MAC and a fixed address on a network, attached to a server
#: (server_id NULL: not attached), with the NIC's firewall profile.
ports = sa.Table(
    "compute_ports", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("network_id", sa.Integer, sa.ForeignKey("compute_networks.id"), nullable=False,
              index=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("server_id", sa.String(36), sa.ForeignKey("compute_servers.id"), nullable=True,
              index=True),
    sa.Column("mac", sa.String(17), nullable=False, unique=True),
    sa.Column("ip", sa.String(39), nullable=False),
    sa.Column("firewall", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("network_id", "ip", name="uq_compute_ports_network_ip"),
)
