"""The identity plugin's tables (identity_*); their migrations are in versions/."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

users = sa.Table(
    "identity_users", metadata,
    sa.Column("uuid", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False, unique=True),
    sa.Column("email", sa.String(256), nullable=False, server_default=""),
    sa.Column("password", sa.String(256), nullable=True),  # scrypt hash; None: no password login
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("provider", sa.String(32), nullable=False, server_default="local"),
    sa.Column("created", sa.Float, nullable=False),
)

tokens = sa.Table(
    "identity_tokens", metadata,
    sa.Column("hash", sa.String(64), primary_key=True),  # sha256 hex of the token
    sa.Column("user", sa.String(64), sa.ForeignKey("identity_users.uuid", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # login, cli, v1, minted
)

projects = sa.Table(
    "identity_projects", metadata,
    sa.Column("uuid", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False, unique=True),
    sa.Column("system", sa.Boolean, nullable=False),  # a user's system project (uuid = user's)
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("created", sa.Float, nullable=False),
)

members = sa.Table(
    "identity_members", metadata,
    sa.Column("project", sa.String(64), sa.ForeignKey("identity_projects.uuid", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("user", sa.String(64), sa.ForeignKey("identity_users.uuid", ondelete="CASCADE"),
              primary_key=True, index=True),
)

resources = sa.Table(
    "identity_resources", metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("unit", sa.String(32), nullable=False, server_default=""),
    sa.Column("description", sa.String(256), nullable=False, server_default=""),
    sa.Column("service", sa.String(64), nullable=False, server_default=""),
    sa.Column("default_limit", sa.BigInteger, nullable=False),  # of each system project
)

# Limits of a project per resource: the whole project's, and each member's share.
limits = sa.Table(
    "identity_limits", metadata,
    sa.Column("project", sa.String(64), sa.ForeignKey("identity_projects.uuid", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("resource", sa.String(128), primary_key=True),
    sa.Column("project_limit", sa.BigInteger, nullable=False),
    sa.Column("member_limit", sa.BigInteger, nullable=False),
)

# Astakos quotaholder holdings: usage_min counts accepted charges, usage_max also the
# pending positive ones (pending negative ones lower usage_min until accepted).
holdings = sa.Table(
    "identity_holdings", metadata,
    sa.Column("holder", sa.String(80), primary_key=True),   # user:<uuid> | project:<uuid>
    sa.Column("source", sa.String(80), primary_key=True),   # project:<uuid> | "" (none)
    sa.Column("resource", sa.String(128), primary_key=True),
    sa.Column("limit", sa.BigInteger, nullable=False),
    sa.Column("usage_min", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("usage_max", sa.BigInteger, nullable=False, server_default="0"),
)

commissions = sa.Table(
    "identity_commissions", metadata,
    sa.Column("serial", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(256), nullable=False, server_default=""),
    sa.Column("issue_time", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),  # pending|accepted|rejected
    sa.Column("resolved", sa.Float, nullable=True),
)

provisions = sa.Table(
    "identity_provisions", metadata,
    sa.Column("serial", sa.Integer, sa.ForeignKey("identity_commissions.serial",
                                                  ondelete="CASCADE"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("holder", sa.String(80), nullable=False),
    sa.Column("source", sa.String(80), nullable=False),
    sa.Column("resource", sa.String(128), nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
)
