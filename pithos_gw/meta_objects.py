"""Object versions: listing, reading, recording and deleting versions of a path.

Mixed into MetaStore (meta.py). Writers of one path are serialised: on PostgreSQL by a
transaction-scoped advisory lock on the path (and a shared lock on its container's row,
which a container deletion takes exclusively), on SQLite by the database's write lock
(BEGIN IMMEDIATE). So two hosts writing the same name both get a version, and the later
commit is current (docs/metadata.md).
"""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from archipelago.errors import NotFound
from pithos_gw.meta_refs import record_refs
from pithos_gw.meta_tables import DELETED, HISTORY, NORMAL, containers, run, versions
from pithos_gw.meta_tables import permissions as perms
from pithos_gw.meta_tables import public as pub

T = TypeVar("T")
v = versions.c
#: ``expect`` of object_put/object_delete: no precondition.
ANY = -1
# The hot statements are built once (bound parameters a, c, n): building and keying a
# statement per call costs more than running it on SQLite.
_A, _C, _N = sa.bindparam("a"), sa.bindparam("c"), sa.bindparam("n")
_PATH = (v.account == _A, v.container == _C, v.name == _N)
_CURRENT = sa.select(versions).where(*_PATH, v.cluster == NORMAL)
_POLICY = sa.select(containers.c.policy).where(containers.c.account == _A,
                                               containers.c.name == _C)
_POLICY_SHARED = _POLICY.with_for_update(read=True)
_RETIRE = versions.update().where(*_PATH, v.cluster == NORMAL).values(cluster=HISTORY)
_DROP = versions.delete().where(*_PATH)
_INSERT = versions.insert().returning(v.serial)


class BytesChanged(Exception):
    """``expect_bytes`` did not hold: another writer changed the path (quota.py retries)."""


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


def pack(hashes: list[str]) -> bytes:
    """The stored form of a hashmap: the 32-byte hashes concatenated."""
    return b"".join(bytes.fromhex(h) for h in hashes)


def unpack(blob: bytes) -> list[str]:
    """Hex hashes of a stored hashmap."""
    return [blob[i : i + 32].hex() for i in range(0, len(blob), 32)]


def _version(row: Any) -> ObjectVersion:
    return ObjectVersion(row[0], row[1], row[2], row[3], row[4], int(row[5]),
                         unpack(bytes(row[6])), row[7], row[8], row[9], json.loads(row[10]),
                         row[11], row[12], row[13])


def _path(account: str, container: str, name: str) -> tuple[Any, ...]:
    return (v.account == account, v.container == container, v.name == name)


def lock_path(db: sa.Connection, account: str, container: str, name: str) -> None:
    """Serialise the writers of one path until the transaction ends (PostgreSQL; SQLite's
    write transactions are serial already)."""
    if db.dialect.name == "postgresql":
        key = json.dumps([account, container, name])
        db.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})


class ObjectsMixin:
    """Object methods of MetaStore."""

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def _ro(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def _objects(self, db: sa.Connection, account: str, container: str, prefix: str,
                 marker: str | None, end_marker: str | None, limit: int | None,
                 until: float | None) -> list[ObjectVersion]:
        q = sa.select(versions).where(v.account == account, v.container == container)
        if until is None:
            q = q.where(v.cluster == NORMAL)
        else:
            w = versions.alias("w")
            newest = sa.select(sa.func.max(w.c.serial)).where(
                w.c.account == v.account, w.c.container == v.container, w.c.name == v.name,
                w.c.mtime <= until).scalar_subquery()
            q = q.where(v.serial == newest, v.cluster != DELETED)
        if prefix:
            # substr() compare instead of LIKE: names may hold % and _.
            q = q.where(sa.func.substr(v.name, 1, len(prefix)) == prefix)
        if marker:
            q = q.where(v.name > marker)
        if end_marker:
            q = q.where(v.name < end_marker)
        q = q.order_by(v.name)
        if limit is not None:
            q = q.limit(limit)
        return [_version(r) for r in db.execute(q)]

    async def object_list(self, account: str, container: str, prefix: str = "",
                          marker: str | None = None, end_marker: str | None = None,
                          limit: int | None = None,
                          until: float | None = None) -> list[ObjectVersion]:
        """Current objects (or as of ``until``) sorted by name."""
        return await self._ro(self._objects, account, container, prefix, marker, end_marker,
                              limit, until)

    async def object_get(self, account: str, container: str, name: str,
                         version: int | None = None,
                         until: float | None = None) -> ObjectVersion | None:
        """The current version, a given serial, or the version current at ``until``."""
        def q(db: sa.Connection) -> ObjectVersion | None:
            base = sa.select(versions).where(*_path(account, container, name))
            if version is not None:
                row = db.execute(base.where(v.serial == version, v.cluster != DELETED)).first()
            elif until is not None:
                row = db.execute(base.where(v.mtime <= until).order_by(v.serial.desc())
                                 .limit(1)).first()
                row = row if row and row[13] != DELETED else None
            else:
                row = run(db, _CURRENT, {"a": account, "c": container, "n": name}).fetchone()
            return _version(row) if row else None

        return await self._ro(q)

    @staticmethod
    def _current(db: sa.Connection, account: str, container: str, name: str) -> Any:
        """Lock the path (and share-lock its container), then its current row or None."""
        where = {"a": account, "c": container, "n": name}
        if run(db, _POLICY_SHARED, where).fetchone() is None:
            raise NotFound("container not found")
        lock_path(db, account, container, name)
        return run(db, _CURRENT, where).fetchone()

    @staticmethod
    def _retire(db: sa.Connection, account: str, container: str, name: str) -> None:
        """Move the current version to history, or drop it when versioning is off."""
        where = {"a": account, "c": container, "n": name}
        row = run(db, _POLICY, where).fetchone()
        if row is None:
            raise NotFound("container not found")
        if json.loads(row[0]).get("versioning", "auto") != "none":
            run(db, _RETIRE, where)
        else:
            run(db, _DROP, where)

    async def object_put(self, account: str, container: str, name: str, *, size: int,
                         hashes: list[str], hash: str, checksum: str, content_type: str,
                         meta: dict[str, str], modified_by: str,
                         uuid: str | None = None, expect: int = ANY,
                         expect_bytes: int = ANY) -> ObjectVersion | None:
        """Record a new current version (blocks must already be stored).

        Preconditions, checked under the path's lock: ``expect`` the serial of the current
        version (0: no current version; None is answered when it fails), ``expect_bytes``
        its size (0 when absent; BytesChanged when it fails). Nothing is written then.
        """
        def q(db: sa.Connection) -> ObjectVersion | None:
            cur = self._current(db, account, container, name)
            if expect != ANY and (cur[0] if cur else 0) != expect:
                return None
            if expect_bytes != ANY and (int(cur[5]) if cur else 0) != expect_bytes:
                raise BytesChanged
            oid = uuid or (cur[4] if cur else str(uuidlib.uuid4()))
            self._retire(db, account, container, name)
            now = time.time()
            serial = run(db, _INSERT, {
                "account": account, "container": container, "name": name, "uuid": oid,
                "bytes": size, "hashes": pack(hashes), "hash": hash, "checksum": checksum,
                "ctype": content_type, "meta": json.dumps(meta), "mtime": now,
                "modified_by": modified_by, "cluster": NORMAL}).fetchone()[0]
            record_refs(db, (account, modified_by), hashes)
            return ObjectVersion(serial, account, container, name, oid, size, list(hashes),
                                 hash, checksum, content_type, meta, now, modified_by)

        return await self._run(q)

    async def object_delete(self, account: str, container: str, name: str, *,
                            expect: int = ANY, expect_bytes: int = ANY) -> bool:
        """Delete the current version (history keeps it and a deletion marker); NotFound
        without one, False (nothing deleted) when it is no longer the version of serial
        ``expect``, BytesChanged when ``expect_bytes`` (see object_put) does not hold."""
        def q(db: sa.Connection) -> bool:
            row = self._current(db, account, container, name)
            if row is None:
                raise NotFound("object not found")
            if expect != ANY and row[0] != expect:
                return False  # replaced since the caller checked it: a newer write wins
            if expect_bytes != ANY and int(row[5]) != expect_bytes:
                raise BytesChanged
            self._retire(db, account, container, name)
            db.execute(versions.insert().values(
                account=account, container=container, name=name, uuid=row[4], bytes=0,
                hashes=b"", hash="", checksum="", ctype="", meta="{}", mtime=time.time(),
                modified_by=row[12], cluster=DELETED))
            for t in (perms, pub):
                db.execute(t.delete().where(t.c.account == account, t.c.container == container,
                                            t.c.name == name))
            return True

        return await self._run(q)

    async def object_set_meta(self, account: str, container: str, name: str,
                              meta: dict[str, str], content_type: str | None = None) -> None:
        """Replace the user metadata (and optionally the type) of the current version; its
        modification time moves to now (Swift's Last-Modified follows a POST)."""
        def q(db: sa.Connection) -> None:
            values: dict[str, Any] = {"meta": json.dumps(meta), "mtime": time.time()}
            if content_type is not None:
                values["ctype"] = content_type
            done = db.execute(versions.update().where(*_path(account, container, name),
                                                      v.cluster == NORMAL).values(**values))
            if done.rowcount == 0:
                raise NotFound("object not found")

        await self._run(q)

    async def checksum_for(self, root: str, size: int) -> str | None:
        """A known MD5 of content with this Merkle root and size (saves a read pass)."""
        return await self._ro(lambda db: db.execute(sa.select(v.checksum).where(
            v.hash == root, v.bytes == size, v.checksum != "").limit(1)).scalar())

    async def versions(self, account: str, container: str, name: str) -> list[tuple[int, float]]:
        """(serial, mtime) of every readable version of a path, oldest first."""
        return await self._ro(lambda db: [(r[0], r[1]) for r in db.execute(
            sa.select(v.serial, v.mtime).where(*_path(account, container, name),
                                               v.cluster != DELETED).order_by(v.serial))])

    async def expired_objects(self, when: float) -> list[tuple[str, str, str, int]]:
        """(account, container, name, serial) of current versions whose X-Delete-At <=
        ``when``."""
        def q(db: sa.Connection) -> list[tuple[str, str, str, int]]:
            # The JSON is filtered here, not in SQL: the same code on both engines.
            rows = db.execute(sa.select(v.account, v.container, v.name, v.meta, v.serial).where(
                v.cluster == NORMAL, v.meta.contains('"X-Delete-At"')))
            out = []
            for a, c, n, m, serial in rows:
                at = json.loads(m).get("X-Delete-At")
                try:
                    if at is not None and int(float(at)) <= when:
                        out.append((a, c, n, serial))
                except (TypeError, ValueError):
                    continue
            return out

        return await self._ro(q)

    async def purge(self, account: str, container: str, name: str | None,
                    until: float) -> int:
        """Drop history (not current) versions up to ``until``; returns how many."""
        def q(db: sa.Connection) -> int:
            stmt = versions.delete().where(v.account == account, v.container == container,
                                           v.cluster != NORMAL, v.mtime <= until)
            if name is not None:
                stmt = stmt.where(v.name == name)
            return int(db.execute(stmt).rowcount)

        return await self._run(q)
