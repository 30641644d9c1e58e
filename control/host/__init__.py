"""The control-plane plugin host: plugin base and context, discovery, the control database
(archipelago.db's SQLAlchemy 2 Core async engine + Alembic), the event bus with its
outbox, the API server.

May import archipelago and pithos_gw; no plugin-specific code lives here (contract: docs/control-api.md).
"""
