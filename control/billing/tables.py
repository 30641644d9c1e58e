"""The billing plugin's tables (SQLAlchemy Core); Alembic revisions in control.billing.versions.

Times are integer microseconds since the epoch (exact, sortable); exact amounts are
fractions written as text ("n/d"); decimals as their text.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
ID = 200   # event ids, users, instances, projects

#: The event log: every usage event once (id is the dedup key).
events = sa.Table(
    "billing_events", metadata,
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
    sa.Index("billing_events_key", "user_id", "resource", "instance", "occurred_us"),
    sa.Index("billing_events_user", "user_id", "occurred_us"),
)

#: Price versions: ``price`` credits per ``unit`` from ``effective_us`` on.
prices = sa.Table(
    "billing_prices", metadata,
    sa.Column("resource", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(8), primary_key=True),
    sa.Column("project", sa.String(ID), primary_key=True),
    sa.Column("effective_us", sa.BigInteger, primary_key=True),
    sa.Column("price", sa.String(64), nullable=False),
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column("set_us", sa.BigInteger, nullable=False),
)

#: Running state per key: the last applied event and the level (or on/off state) it left.
state = sa.Table(
    "billing_state", metadata,
    sa.Column("user_id", sa.String(ID), primary_key=True),
    sa.Column("resource", sa.String(64), primary_key=True),
    sa.Column("instance", sa.String(ID), primary_key=True),
    sa.Column("last_us", sa.BigInteger, nullable=False),
    sa.Column("last_id", sa.String(ID), nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("project", sa.String(ID), nullable=False),
)

#: Running totals: charges up to each key's last event, per state and month.
totals = sa.Table(
    "billing_totals", metadata,
    sa.Column("user_id", sa.String(ID), primary_key=True),
    sa.Column("resource", sa.String(64), primary_key=True),
    sa.Column("instance", sa.String(ID), primary_key=True),
    sa.Column("state", sa.String(8), primary_key=True),
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("quantity", sa.Text, nullable=False),
    sa.Column("credits", sa.Text, nullable=False),
)
