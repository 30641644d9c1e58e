"""Gateway metadata in SQLite: accounts, containers, object versions, sharing, users, images.

Every call runs on one worker thread that owns the connection, so writes are
serialised and each public method is one transaction. Only this module knows
SQL: a PostgreSQL store would implement the same methods.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
import time
import uuid as uuidlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from archipelago.errors import Busy, NoSpace, NotFound
from pithos_gw.meta_extra import ExtraMixin
from pithos_gw.meta_refs import RefsMixin, create_refs, record_refs

T = TypeVar("T")
NORMAL, HISTORY, DELETED = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users(account TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS accounts(name TEXT PRIMARY KEY, meta TEXT NOT NULL DEFAULT '{}',
    groups TEXT NOT NULL DEFAULT '{}', mtime REAL NOT NULL);
CREATE TABLE IF NOT EXISTS containers(account TEXT NOT NULL, name TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}', policy TEXT NOT NULL DEFAULT '{}', mtime REAL NOT NULL,
    PRIMARY KEY(account, name));
CREATE TABLE IF NOT EXISTS versions(serial INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL, container TEXT NOT NULL, name TEXT NOT NULL, uuid TEXT NOT NULL,
    bytes INTEGER NOT NULL, hashes BLOB NOT NULL, hash TEXT NOT NULL, checksum TEXT NOT NULL,
    ctype TEXT NOT NULL, meta TEXT NOT NULL, mtime REAL NOT NULL, modified_by TEXT NOT NULL,
    cluster INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS versions_path ON versions(account, container, name, serial);
CREATE UNIQUE INDEX IF NOT EXISTS versions_current ON versions(account, container, name)
    WHERE cluster = 0;
CREATE INDEX IF NOT EXISTS versions_hash ON versions(hash, bytes);
CREATE TABLE IF NOT EXISTS permissions(account TEXT NOT NULL, container TEXT NOT NULL,
    name TEXT NOT NULL, read TEXT NOT NULL, write TEXT NOT NULL,
    PRIMARY KEY(account, container, name));
CREATE TABLE IF NOT EXISTS public(token TEXT PRIMARY KEY, account TEXT NOT NULL,
    container TEXT NOT NULL, name TEXT NOT NULL, UNIQUE(account, container, name));
CREATE TABLE IF NOT EXISTS images(id TEXT PRIMARY KEY, owner TEXT NOT NULL,
    info TEXT NOT NULL);
"""
_VCOLS = ("serial, account, container, name, uuid, bytes, hashes, hash, checksum, ctype, meta, "
          "mtime, modified_by, cluster")


@dataclass
class ObjectVersion:
    """One version of an object: its map and metadata."""

    serial: int
    account: str
    container: str
    name: str
    uuid: str
    bytes: int
    hashes: list[str]
    hash: str
    checksum: str
    content_type: str
    meta: dict[str, str]
    mtime: float
    modified_by: str
    cluster: int = NORMAL


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


def _pack(hashes: list[str]) -> bytes:
    return b"".join(bytes.fromhex(h) for h in hashes)


def _unpack(blob: bytes) -> list[str]:
    return [blob[i : i + 32].hex() for i in range(0, len(blob), 32)]


def _version(row: tuple[Any, ...]) -> ObjectVersion:
    return ObjectVersion(row[0], row[1], row[2], row[3], row[4], row[5], _unpack(row[6]), row[7],
                         row[8], row[9], json.loads(row[10]), row[11], row[12], row[13])


def _merge(old: dict[str, Any], new: dict[str, Any], replace: bool) -> dict[str, Any]:
    """Swift replace or Pithos ``?update`` merge (an empty value deletes the key)."""
    out = {} if replace else dict(old)
    for k, v in new.items():
        if v in ("", None, []):
            out.pop(k, None)
        else:
            out[k] = v
    return out


class MetaStore(ExtraMixin, RefsMixin):
    """Async facade over one SQLite database, all calls on a single worker thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gw-meta")
        self._db: sqlite3.Connection | None = None

    def _open(self) -> None:
        if self.path != ":memory:" and not os.path.exists(self.path):
            # The database holds user keys: create it private before sqlite opens it.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        create_refs(db)
        db.commit()
        self._db = db

    def _full(self, e: sqlite3.Error) -> bool:
        """True when ``e`` means the disk holding the database is full."""
        if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        # Growing the WAL index fails as an I/O error on a full disk.
        if not isinstance(e, sqlite3.OperationalError) or self.path == ":memory:":
            return False
        try:
            return os.statvfs(os.path.dirname(os.path.abspath(self.path))).f_bavail == 0
        except OSError:
            return False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def txn() -> T:
            try:
                if self._db is None:
                    self._open()
                assert self._db is not None
                with self._db:
                    return fn(self._db, *args)
            except sqlite3.Error as e:
                if self._full(e):
                    raise NoSpace(f"the gateway's metadata database: {e}") from None
                raise
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise NoSpace(f"the gateway's metadata database: {e.strerror}") from None
                raise

        return await asyncio.get_running_loop().run_in_executor(self._pool, txn)

    async def open(self) -> None:
        """Create the schema if needed."""
        await self._run(lambda db: None)

    async def close(self) -> None:
        """Close the connection and the worker thread."""
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._pool, shut)
        self._pool.shutdown(wait=True)

    # accounts ---------------------------------------------------------------
    async def account_get(self, name: str) -> Account:
        """An account and its usage (absent accounts are empty)."""
        def q(db: sqlite3.Connection) -> Account:
            acc = Account(name)
            row = db.execute("SELECT meta, groups, mtime FROM accounts WHERE name=?",
                             (name,)).fetchone()
            if row:
                acc.meta, acc.groups, acc.mtime = json.loads(row[0]), json.loads(row[1]), row[2]
            acc.containers = db.execute("SELECT count(*) FROM containers WHERE account=?",
                                        (name,)).fetchone()[0]
            acc.objects, acc.bytes = db.execute(
                "SELECT count(*), coalesce(sum(bytes),0) FROM versions WHERE account=? AND "
                "cluster=0", (name,)).fetchone()
            return acc

        return await self._run(q)

    async def account_update(self, name: str, meta: dict[str, str] | None,
                             groups: dict[str, list[str]] | None, replace: bool) -> None:
        """Set account meta and/or groups (replace, or merge as Pithos ?update)."""
        def q(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT meta, groups FROM accounts WHERE name=?", (name,)).fetchone()
            old_m, old_g = (json.loads(row[0]), json.loads(row[1])) if row else ({}, {})
            m = _merge(old_m, meta, replace) if meta is not None else old_m
            g = _merge(old_g, groups, replace) if groups is not None else old_g
            db.execute("INSERT OR REPLACE INTO accounts VALUES(?,?,?,?)",
                       (name, json.dumps(m), json.dumps(g), time.time()))

        await self._run(q)

    # containers -------------------------------------------------------------
    def _container(self, db: sqlite3.Connection, account: str, name: str,
                   until: float | None = None, usage: bool = True) -> Container | None:
        row = db.execute("SELECT meta, policy, mtime FROM containers WHERE account=? AND name=?",
                         (account, name)).fetchone()
        if row is None:
            return None
        c = Container(account, name, json.loads(row[0]), json.loads(row[1]), row[2])
        if not usage:
            return c
        if until is None:
            c.count, c.bytes = db.execute(
                "SELECT count(*), coalesce(sum(bytes),0) FROM versions WHERE account=? AND "
                "container=? AND cluster=0", (account, name)).fetchone()
        else:
            objs = self._objects(db, account, name, "", None, None, None, until)
            c.count, c.bytes = len(objs), sum(o.bytes for o in objs)
        return c

    async def container_get(self, account: str, name: str, until: float | None = None,
                            usage: bool = True) -> Container | None:
        """A container with object count and bytes (as of ``until``), or None.

        ``usage=False`` skips counting (a cheap existence and policy check).
        """
        return await self._run(self._container, account, name, until, usage)

    async def container_list(self, account: str, until: float | None = None) -> list[Container]:
        """Every container of an account, sorted by name, with usage (as of ``until``)."""
        def q(db: sqlite3.Connection) -> list[Container]:
            names = [r[0] for r in db.execute(
                "SELECT name FROM containers WHERE account=? ORDER BY name", (account,))]
            return [c for n in names
                    if (c := self._container(db, account, n, until)) is not None]

        return await self._run(q)

    async def container_put(self, account: str, name: str, meta: dict[str, str],
                            policy: dict[str, str]) -> bool:
        """Create a container (True) or update an existing one's meta/policy (False)."""
        def q(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT meta, policy FROM containers WHERE account=? AND name=?",
                             (account, name)).fetchone()
            if row is None:
                db.execute("INSERT INTO containers VALUES(?,?,?,?,?)",
                           (account, name, json.dumps(_merge({}, meta, True)),
                            json.dumps(_merge({}, policy, True)), time.time()))
                return True
            m = _merge(json.loads(row[0]), meta, False)
            p = _merge(json.loads(row[1]), policy, False)
            db.execute("UPDATE containers SET meta=?, policy=?, mtime=? WHERE account=? AND name=?",
                       (json.dumps(m), json.dumps(p), time.time(), account, name))
            return False

        return await self._run(q)

    async def container_update(self, account: str, name: str, meta: dict[str, str] | None,
                               policy: dict[str, str], replace: bool) -> None:
        """Change container meta (replace or merge) and policy (always merged)."""
        def q(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT meta, policy FROM containers WHERE account=? AND name=?",
                             (account, name)).fetchone()
            if row is None:
                raise NotFound("container not found")
            m = _merge(json.loads(row[0]), meta, replace) if meta is not None else json.loads(
                row[0])
            p = _merge(json.loads(row[1]), policy, False)
            db.execute("UPDATE containers SET meta=?, policy=?, mtime=? WHERE account=? AND name=?",
                       (json.dumps(m), json.dumps(p), time.time(), account, name))

        await self._run(q)

    async def container_delete(self, account: str, name: str) -> None:
        """Delete an empty container (Busy -> 409 if it holds objects) and its history."""
        def q(db: sqlite3.Connection) -> None:
            if self._container(db, account, name) is None:
                raise NotFound("container not found")
            if db.execute("SELECT 1 FROM versions WHERE account=? AND container=? AND cluster=0 "
                          "LIMIT 1", (account, name)).fetchone():
                raise Busy("container not empty")
            for table in ("versions", "permissions", "public"):
                db.execute(f"DELETE FROM {table} WHERE account=? AND container=?", (account, name))
            db.execute("DELETE FROM containers WHERE account=? AND name=?", (account, name))

        await self._run(q)

    # objects ----------------------------------------------------------------
    def _objects(self, db: sqlite3.Connection, account: str, container: str, prefix: str,
                 marker: str | None, end_marker: str | None, limit: int | None,
                 until: float | None) -> list[ObjectVersion]:
        args: list[Any] = [account, container]
        if until is None:
            sql = f"SELECT {_VCOLS} FROM versions v WHERE account=? AND container=? AND cluster=0"
        else:
            sql = (f"SELECT {_VCOLS} FROM versions v WHERE account=? AND container=? AND "
                   "serial = (SELECT max(serial) FROM versions w WHERE w.account=v.account AND "
                   "w.container=v.container AND w.name=v.name AND w.mtime<=?) AND cluster!=2")
            args.append(until)
        if prefix:
            # substr() compare instead of LIKE: names may hold % and _.
            sql += " AND substr(name, 1, ?) = ?"
            args += [len(prefix), prefix]
        if marker:
            sql += " AND name > ?"
            args.append(marker)
        if end_marker:
            sql += " AND name < ?"
            args.append(end_marker)
        sql += " ORDER BY name"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_version(r) for r in db.execute(sql, args)]

    async def object_list(self, account: str, container: str, prefix: str = "",
                          marker: str | None = None, end_marker: str | None = None,
                          limit: int | None = None,
                          until: float | None = None) -> list[ObjectVersion]:
        """Current objects (or as of ``until``) sorted by name."""
        return await self._run(self._objects, account, container, prefix, marker, end_marker,
                               limit, until)

    async def object_get(self, account: str, container: str, name: str,
                         version: int | None = None,
                         until: float | None = None) -> ObjectVersion | None:
        """The current version, a given serial, or the version current at ``until``."""
        def q(db: sqlite3.Connection) -> ObjectVersion | None:
            base = f"SELECT {_VCOLS} FROM versions WHERE account=? AND container=? AND name=?"
            if version is not None:
                row = db.execute(base + " AND serial=? AND cluster!=2",
                                 (account, container, name, version)).fetchone()
            elif until is not None:
                row = db.execute(base + " AND mtime<=? ORDER BY serial DESC LIMIT 1",
                                 (account, container, name, until)).fetchone()
                row = row if row and row[13] != DELETED else None
            else:
                row = db.execute(base + " AND cluster=0", (account, container, name)).fetchone()
            return _version(row) if row else None

        return await self._run(q)

    def _retire(self, db: sqlite3.Connection, account: str, container: str, name: str) -> None:
        """Move the current version to history, or drop it when versioning is off."""
        row = db.execute("SELECT policy FROM containers WHERE account=? AND name=?",
                         (account, container)).fetchone()
        if row is None:
            raise NotFound("container not found")
        keep = json.loads(row[0]).get("versioning", "auto") != "none"
        if keep:
            db.execute("UPDATE versions SET cluster=1 WHERE account=? AND container=? AND name=? "
                       "AND cluster=0", (account, container, name))
        else:
            db.execute("DELETE FROM versions WHERE account=? AND container=? AND name=?",
                       (account, container, name))

    async def object_put(self, account: str, container: str, name: str, *, size: int,
                         hashes: list[str], hash: str, checksum: str, content_type: str,
                         meta: dict[str, str], modified_by: str,
                         uuid: str | None = None) -> ObjectVersion:
        """Record a new current version (blocks must already be stored)."""
        def q(db: sqlite3.Connection) -> ObjectVersion:
            cur = db.execute("SELECT uuid FROM versions WHERE account=? AND container=? AND "
                             "name=? AND cluster=0", (account, container, name)).fetchone()
            oid = uuid or (cur[0] if cur else str(uuidlib.uuid4()))
            self._retire(db, account, container, name)
            now = time.time()
            c = db.execute(f"INSERT INTO versions({_VCOLS}) VALUES(NULL,?,?,?,?,?,?,?,?,?,?,?,?,0)",
                           (account, container, name, oid, size, _pack(hashes), hash, checksum,
                            content_type, json.dumps(meta), now, modified_by))
            record_refs(db, (account, modified_by), hashes)
            return ObjectVersion(c.lastrowid or 0, account, container, name, oid, size,
                                 list(hashes), hash, checksum, content_type, meta, now,
                                 modified_by)

        return await self._run(q)

    async def object_delete(self, account: str, container: str, name: str) -> None:
        """Delete the current version (history keeps it and a deletion marker)."""
        def q(db: sqlite3.Connection) -> None:
            row = db.execute(f"SELECT {_VCOLS} FROM versions WHERE account=? AND container=? "
                             "AND name=? AND cluster=0", (account, container, name)).fetchone()
            if row is None:
                raise NotFound("object not found")
            self._retire(db, account, container, name)
            db.execute(f"INSERT INTO versions({_VCOLS}) VALUES(NULL,?,?,?,?,0,?,?,'','',?,?,?,2)",
                       (account, container, name, row[4], b"", "", "{}", time.time(), row[12]))
            db.execute("DELETE FROM permissions WHERE account=? AND container=? AND name=?",
                       (account, container, name))
            db.execute("DELETE FROM public WHERE account=? AND container=? AND name=?",
                       (account, container, name))

        await self._run(q)
