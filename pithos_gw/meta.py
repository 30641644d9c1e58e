"""Gateway metadata: accounts, containers, object versions, sharing, users, images.

SQLAlchemy Core over archipelago.db's Database: a SQLite file (the embedded default,
DATA_DIR/gateway.db) or PostgreSQL ([database] url, several gateways on one Ceph pool),
the same tables (meta_tables.py) and migrations (meta_schema.py) on both. Each public
method is one transaction; the concurrency rules are in docs/metadata.md. Topics:
accounts and containers here, objects in meta_objects.py, users/sharing/images in
meta_extra.py, block references in meta_refs.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from archipelago.db import Database, SerialSqlite, sqlite_url
from archipelago.errors import Busy, NotFound
from pithos_gw import meta_schema
from pithos_gw.meta_extra import ExtraMixin
from pithos_gw.meta_objects import ObjectsMixin, ObjectVersion
from pithos_gw.meta_refs import RefsMixin
from pithos_gw.meta_tables import DELETED, HISTORY, NORMAL, accounts, containers, run, upsert, versions
from pithos_gw.meta_tables import permissions as perms
from pithos_gw.meta_tables import public as pub

T = TypeVar("T")
# Built once (see meta_objects): the container checks of every object request.
_CONTAINER = sa.select(containers.c.meta, containers.c.policy, containers.c.mtime).where(
    containers.c.account == sa.bindparam("a"), containers.c.name == sa.bindparam("c"))
_USAGE = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(versions.c.bytes), 0)).where(
    versions.c.account == sa.bindparam("a"), versions.c.container == sa.bindparam("c"),
    versions.c.cluster == NORMAL)
__all__ = ["MetaStore", "ObjectVersion", "Container", "Account", "NORMAL", "HISTORY",
           "DELETED", "merge"]


@dataclass
class Container:
    """A container with its usage."""

    account: str
    name: str
    meta: dict[str, str]
    policy: dict[str, str]
    mtime: float
    count: int = 0
    bytes: int = 0


@dataclass
class Account:
    """An account with its usage."""

    name: str
    meta: dict[str, str] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    mtime: float = 0.0
    containers: int = 0
    objects: int = 0
    bytes: int = 0


def merge(old: dict[str, Any], new: dict[str, Any], replace: bool) -> dict[str, Any]:
    """Swift replace or Pithos ``?update`` merge (an empty value deletes the key)."""
    out = {} if replace else dict(old)
    for k, v in new.items():
        if v in ("", None, []):
            out.pop(k, None)
        else:
            out[k] = v
    return out


def url_of(where: str | os.PathLike[str]) -> str:
    """A database URL, or the SQLite file path given instead of one."""
    text = os.fspath(where)
    return text if "://" in text else sqlite_url(text)


class MetaStore(ObjectsMixin, ExtraMixin, RefsMixin):
    """The gateway's metadata over one database (a SQLite path or a SQLAlchemy URL)."""

    def __init__(self, where: str | Path, pool_size: int = 5) -> None:
        self.url = url_of(where)
        what = "gateway's metadata database"
        #: The async engine: migrations, and every call on PostgreSQL.
        self.db = Database(self.url, what, pool_size)
        # On SQLite the calls run on one thread with one connection (no hand-off per
        # statement, as aiosqlite does): about ten times the rate for small objects.
        self._serial = SerialSqlite(self.url, what) if self.db.is_sqlite else None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in one write transaction."""
        if self._serial is not None:
            return await self._serial.run(lambda c: fn(c, *args), write=True)
        async with self.db.begin() as conn:
            return await conn.run_sync(lambda c: fn(c, *args))

    async def _ro(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in one read-only transaction."""
        if self._serial is not None:
            return await self._serial.run(lambda c: fn(c, *args), write=False)
        async with self.db.read() as conn:
            return await conn.run_sync(lambda c: fn(c, *args))

    async def open(self) -> None:
        """Create or migrate the schema."""
        await meta_schema.upgrade(self.db)

    async def close(self) -> None:
        """Close the database's connections."""
        if self._serial is not None:
            await self._serial.close()
        await self.db.close()

    # accounts ---------------------------------------------------------------
    async def account_get(self, name: str) -> Account:
        """An account and its usage (absent accounts are empty)."""
        def q(db: sa.Connection) -> Account:
            acc = Account(name)
            row = db.execute(sa.select(accounts.c.meta, accounts.c.groups, accounts.c.mtime)
                             .where(accounts.c.name == name)).first()
            if row:
                acc.meta, acc.groups, acc.mtime = json.loads(row[0]), json.loads(row[1]), row[2]
            acc.containers = db.execute(sa.select(sa.func.count()).select_from(containers)
                                        .where(containers.c.account == name)).scalar_one()
            acc.objects, acc.bytes = db.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(versions.c.bytes), 0))
                .where(versions.c.account == name, versions.c.cluster == NORMAL)).one()
            acc.bytes = int(acc.bytes)
            return acc

        return await self._ro(q)

    async def account_update(self, name: str, meta: dict[str, str] | None,
                             groups: dict[str, list[str]] | None, replace: bool) -> None:
        """Set account meta and/or groups (replace, or merge as Pithos ?update)."""
        def q(db: sa.Connection) -> None:
            row = db.execute(sa.select(accounts.c.meta, accounts.c.groups)
                             .where(accounts.c.name == name).with_for_update()).first()
            old_m, old_g = (json.loads(row[0]), json.loads(row[1])) if row else ({}, {})
            m = merge(old_m, meta, replace) if meta is not None else old_m
            g = merge(old_g, groups, replace) if groups is not None else old_g
            values = {"meta": json.dumps(m), "groups": json.dumps(g), "mtime": time.time()}
            upsert(db, accounts, {"name": name}, values)

        await self._run(q)

    # containers -------------------------------------------------------------
    def _container(self, db: sa.Connection, account: str, name: str,
                   until: float | None = None, usage: bool = True) -> Container | None:
        row = run(db, _CONTAINER, {"a": account, "c": name}).fetchone()
        if row is None:
            return None
        c = Container(account, name, json.loads(row[0]), json.loads(row[1]), row[2])
        if not usage:
            return c
        if until is None:
            count, nbytes = run(db, _USAGE, {"a": account, "c": name}).fetchone()
            c.count, c.bytes = int(count), int(nbytes)
        else:
            objs = self._objects(db, account, name, "", None, None, None, until)
            c.count, c.bytes = len(objs), sum(o.bytes for o in objs)
        return c

    async def container_get(self, account: str, name: str, until: float | None = None,
                            usage: bool = True) -> Container | None:
        """A container with object count and bytes (as of ``until``), or None.

        ``usage=False`` skips counting (a cheap existence and policy check).
        """
        return await self._ro(self._container, account, name, until, usage)

    async def container_list(self, account: str, until: float | None = None) -> list[Container]:
        """Every container of an account, sorted by name, with usage (as of ``until``)."""
        def q(db: sa.Connection) -> list[Container]:
            names = db.execute(sa.select(containers.c.name).where(
                containers.c.account == account).order_by(containers.c.name)).scalars().all()
            return [c for n in names
                    if (c := self._container(db, account, n, until)) is not None]

        return await self._ro(q)

    async def container_put(self, account: str, name: str, meta: dict[str, str],
                            policy: dict[str, str]) -> bool:
        """Create a container (True) or update an existing one's meta/policy (False)."""
        def q(db: sa.Connection) -> bool:
            where = (containers.c.account == account, containers.c.name == name)
            row = db.execute(sa.select(containers.c.meta, containers.c.policy).where(*where)
                             .with_for_update()).first()
            if row is None:
                # Two hosts creating the same container: the second one updates.
                created = upsert(db, containers, {"account": account, "name": name}, {
                    "meta": json.dumps(merge({}, meta, True)),
                    "policy": json.dumps(merge({}, policy, True)), "mtime": time.time()},
                    update=False)
                if created:
                    return True
                row = db.execute(sa.select(containers.c.meta, containers.c.policy)
                                 .where(*where).with_for_update()).one()
            m = merge(json.loads(row[0]), meta, False)
            p = merge(json.loads(row[1]), policy, False)
            db.execute(containers.update().where(*where).values(
                meta=json.dumps(m), policy=json.dumps(p), mtime=time.time()))
            return False

        return await self._run(q)

    async def container_update(self, account: str, name: str, meta: dict[str, str] | None,
                               policy: dict[str, str], replace: bool) -> None:
        """Change container meta (replace or merge) and policy (always merged)."""
        def q(db: sa.Connection) -> None:
            where = (containers.c.account == account, containers.c.name == name)
            row = db.execute(sa.select(containers.c.meta, containers.c.policy).where(*where)
                             .with_for_update()).first()
            if row is None:
                raise NotFound("container not found")
            old = json.loads(row[0])
            m = merge(old, meta, replace) if meta is not None else old
            p = merge(json.loads(row[1]), policy, False)
            db.execute(containers.update().where(*where).values(
                meta=json.dumps(m), policy=json.dumps(p), mtime=time.time()))

        await self._run(q)

    async def container_delete(self, account: str, name: str) -> None:
        """Delete an empty container (Busy -> 409 if it holds objects) and its history."""
        def q(db: sa.Connection) -> None:
            # The exclusive row lock waits for object writes in flight (they share it).
            if db.execute(sa.select(containers.c.name).where(
                    containers.c.account == account, containers.c.name == name)
                    .with_for_update()).first() is None:
                raise NotFound("container not found")
            if db.execute(sa.select(versions.c.serial).where(
                    versions.c.account == account, versions.c.container == name,
                    versions.c.cluster == NORMAL).limit(1)).first():
                raise Busy("container not empty")
            for t in (versions, perms, pub):
                db.execute(t.delete().where(t.c.account == account, t.c.container == name))
            db.execute(containers.delete().where(containers.c.account == account,
                                                 containers.c.name == name))

        await self._run(q)

