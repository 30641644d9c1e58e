"""Alembic environment of the control database: runs on the connection the host passes in
(``config.attributes["connection"]``, inside the host's transaction); never opens its own."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
