"""Pithos+ / OpenStack Swift gateway (aiohttp on uvloop) and the Plankton image registry.

Entry points: ``app.make_app(blocker, db_path, config)`` and ``server`` (the process).
Modules: store (blocks), meta/meta_objects/meta_extra/meta_refs (metadata over SQLAlchemy:
SQLite or PostgreSQL; meta_tables, meta_schema + versions/ its migrations), app (dispatch, errors),
accounts, containers, objects, reads, hashmaps, plankton, auth, listing, common.
May import archipelago (blocker contract, hashing, errors, config, instance), never control.
"""
