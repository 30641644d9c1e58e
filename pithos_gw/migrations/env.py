"""Alembic environment of the gateway's metadata: runs on the connection pithos_gw.meta_schema
passes in (inside its transaction), with the gateway's own version table."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True,
                  version_table=context.config.attributes["version_table"])
with context.begin_transaction():
    context.run_migrations()
