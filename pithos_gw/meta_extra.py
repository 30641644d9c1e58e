"""Users, sharing, public tokens and image records: the rest of the metadata store.

Mixed into MetaStore (meta.py); every method is one transaction on its worker thread.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import string
import time
from collections.abc import Callable
from typing import Any, TypeVar

from archipelago.errors import AlreadyExists, Forbidden, InvalidArgument, NotFound

T = TypeVar("T")


#: Characters an account name may not hold: path and sharing syntax ("read=a,b;write=c",
#: "account:group", "*" = everyone), and what Swift tempauth splits on.
_ACCOUNT_FORBIDDEN = frozenset("/:*,;=")


def check_account_name(name: str) -> str:
    """InvalidArgument unless ``name`` can be an account: 1..256 UTF-8 bytes, not "." or
    "..", no control characters, no surrounding spaces, none of / : * , ; =."""
    bad = (not name or name in (".", "..") or name != name.strip()
           or len(name.encode("utf-8", "surrogatepass")) > 256
           or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name)
           or any(c in _ACCOUNT_FORBIDDEN for c in name))
    if bad:
        raise InvalidArgument(f"bad account name {name!r}: 1..256 bytes, not '.' or '..', "
                              "no control characters or surrounding spaces, none of / : * , ; =")
    return name


class ExtraMixin:
    """Methods of MetaStore that do not touch objects' maps."""

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    # users ----------------------------------------------------------------
    async def user_add(self, account: str) -> str:
        """Create a user with a fresh random key; AlreadyExists if present, InvalidArgument
        for a name that is not a valid account (check_account_name)."""
        check_account_name(account)
        key = secrets.token_urlsafe(24)

        def q(db: sqlite3.Connection) -> str:
            if db.execute("SELECT 1 FROM users WHERE account=?", (account,)).fetchone():
                raise AlreadyExists(f"user {account!r} already exists")
            db.execute("INSERT INTO users VALUES(?,?,?)", (account, key, time.time()))
            return key

        return await self._run(q)

    async def user_list(self) -> list[tuple[str, float]]:
        """(account, creation time) of every user."""
        return await self._run(lambda db: [tuple(r) for r in db.execute(
            "SELECT account, created FROM users ORDER BY account")])

    async def user_key(self, account: str) -> str | None:
        """The key of a user, or None."""
        def q(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT key FROM users WHERE account=?", (account,)).fetchone()
            return row[0] if row else None

        return await self._run(q)

    async def user_by_token(self, token: str) -> str | None:
        """The account a token (the v1 key) authenticates, or None."""
        # Users are never deleted, so a positive answer can be cached for the process.
        cache: dict[str, str] = self.__dict__.setdefault("_token_cache", {})
        if token in cache:
            return cache[token]

        def q(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT account FROM users WHERE key=?", (token,)).fetchone()
            return row[0] if row else None

        user = await self._run(q)
        if user is not None and len(cache) < 100_000:
            cache[token] = user
        return user

    async def checksum_for(self, root: str, size: int) -> str | None:
        """A known MD5 of content with this Merkle root and size (saves a read pass)."""
        def q(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT checksum FROM versions WHERE hash=? AND bytes=? AND "
                             "checksum!='' LIMIT 1", (root, size)).fetchone()
            return row[0] if row else None

        return await self._run(q)

    async def versions(self, account: str, container: str, name: str) -> list[tuple[int, float]]:
        """(serial, mtime) of every readable version of a path, oldest first."""
        return await self._run(lambda db: [tuple(r) for r in db.execute(
            "SELECT serial, mtime FROM versions WHERE account=? AND container=? AND name=? AND "
            "cluster!=2 ORDER BY serial", (account, container, name))])
    async def object_set_meta(self, account: str, container: str, name: str,
                              meta: dict[str, str], content_type: str | None = None) -> None:
        """Replace the user metadata (and optionally the type) of the current version; its
        modification time moves to now (Swift's Last-Modified follows a POST)."""
        def q(db: sqlite3.Connection) -> None:
            c = db.execute("UPDATE versions SET meta=?, ctype=coalesce(?, ctype), mtime=? "
                           "WHERE account=? AND container=? AND name=? AND cluster=0",
                           (json.dumps(meta), content_type, time.time(), account, container,
                            name))
            if c.rowcount == 0:
                raise NotFound("object not found")

        await self._run(q)

    async def expired_objects(self, when: float) -> list[tuple[str, str, str]]:
        """(account, container, name) of current versions whose X-Delete-At <= ``when``."""
        return await self._run(lambda db: [tuple(r) for r in db.execute(
            "SELECT account, container, name FROM versions WHERE cluster=0 AND "
            "json_extract(meta, '$.\"X-Delete-At\"') IS NOT NULL AND "
            "CAST(json_extract(meta, '$.\"X-Delete-At\"') AS INTEGER) <= ?", (when,))])

    async def purge(self, account: str, container: str, name: str | None,
                    until: float) -> int:
        """Drop history (not current) versions up to ``until``; returns how many."""
        def q(db: sqlite3.Connection) -> int:
            sql = ("DELETE FROM versions WHERE account=? AND container=? AND cluster!=0 AND "
                   "mtime<=?")
            args: list[Any] = [account, container, until]
            if name is not None:
                sql += " AND name=?"
                args.append(name)
            return db.execute(sql, args).rowcount

        return await self._run(q)

    # sharing and public -----------------------------------------------------
    async def sharing_get(self, account: str, container: str,
                          name: str) -> tuple[list[str], list[str]]:
        """(read, write) lists of an object; empty when not shared."""
        def q(db: sqlite3.Connection) -> tuple[list[str], list[str]]:
            row = db.execute("SELECT read, write FROM permissions WHERE account=? AND "
                             "container=? AND name=?", (account, container, name)).fetchone()
            return (json.loads(row[0]), json.loads(row[1])) if row else ([], [])

        return await self._run(q)

    @staticmethod
    def _effective(db: sqlite3.Connection, account: str, container: str,
                   name: str) -> tuple[str, list[str], list[str]] | None:
        row = db.execute("SELECT read, write FROM permissions WHERE account=? AND "
                         "container=? AND name=?", (account, container, name)).fetchone()
        if row:
            return name, json.loads(row[0]), json.loads(row[1])
        parts = name.split("/")
        for i in range(len(parts) - 1, 0, -1):
            path = "/".join(parts[:i])
            row = db.execute(
                "SELECT p.read, p.write FROM permissions p JOIN versions v ON "
                "v.account=p.account AND v.container=p.container AND v.name=p.name AND "
                "v.cluster=0 AND v.ctype IN ('application/directory', 'application/folder') "
                "WHERE p.account=? AND p.container=? AND p.name=?",
                (account, container, path)).fetchone()
            if row:
                return path, json.loads(row[0]), json.loads(row[1])
        return None

    async def sharing_effective(self, account: str, container: str,
                                name: str) -> tuple[str, list[str], list[str]] | None:
        """(path, read, write) governing an object: its own sharing, else that of the
        closest ancestor folder (an application/directory object); None if unshared."""
        return await self._run(self._effective, account, container, name)

    async def object_acl(self, account: str, container: str, name: str
                         ) -> tuple[tuple[str, list[str], list[str]] | None, str | None]:
        """Effective sharing and public token of an object, in one round trip."""
        def q(db: sqlite3.Connection) -> tuple[Any, str | None]:
            row = db.execute("SELECT token FROM public WHERE account=? AND container=? AND "
                             "name=?", (account, container, name)).fetchone()
            return self._effective(db, account, container, name), row[0] if row else None

        return await self._run(q)

    async def sharing_set(self, account: str, container: str, name: str, read: list[str],
                          write: list[str]) -> None:
        """Set (or with two empty lists remove) the sharing of an object."""
        def q(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM permissions WHERE account=? AND container=? AND name=?",
                       (account, container, name))
            if read or write:
                db.execute("INSERT INTO permissions VALUES(?,?,?,?,?)",
                           (account, container, name, json.dumps(read), json.dumps(write)))

        await self._run(q)

    async def shares(self, account: str | None = None
                     ) -> list[tuple[str, str, list[str], list[str]]]:
        """(account, container, read, write) of shared objects (of one account, or all)."""
        def q(db: sqlite3.Connection) -> list[tuple[str, str, list[str], list[str]]]:
            sql = "SELECT account, container, read, write FROM permissions"
            args: tuple[str, ...] = ()
            if account is not None:
                sql += " WHERE account=?"
                args = (account,)
            return [(r[0], r[1], json.loads(r[2]), json.loads(r[3]))
                    for r in db.execute(sql + " ORDER BY account, container", args)]

        return await self._run(q)

    async def public_get(self, account: str, container: str, name: str) -> str | None:
        """The public token of an object, or None."""
        def q(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT token FROM public WHERE account=? AND container=? AND name=?",
                             (account, container, name)).fetchone()
            return row[0] if row else None

        return await self._run(q)

    async def public_set(self, account: str, container: str, name: str, on: bool) -> str | None:
        """Publish (returns the 16-character token) or unpublish an object."""
        alphabet = string.ascii_letters + string.digits
        token = "".join(secrets.choice(alphabet) for _ in range(16))

        def q(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT token FROM public WHERE account=? AND container=? AND name=?",
                             (account, container, name)).fetchone()
            if not on:
                db.execute("DELETE FROM public WHERE account=? AND container=? AND name=?",
                           (account, container, name))
                return None
            if row:
                return str(row[0])
            db.execute("INSERT INTO public VALUES(?,?,?,?)", (token, account, container, name))
            return token

        return await self._run(q)

    async def public_lookup(self, token: str) -> tuple[str, str, str] | None:
        """(account, container, name) of a public token."""
        def q(db: sqlite3.Connection) -> tuple[str, str, str] | None:
            row = db.execute("SELECT account, container, name FROM public WHERE token=?",
                             (token,)).fetchone()
            return (row[0], row[1], row[2]) if row else None

        return await self._run(q)

    # images -----------------------------------------------------------------
    async def image_put(self, image_id: str, owner: str, info: dict[str, Any],
                        guard: bool = False) -> None:
        """Create or replace an image record; with ``guard``, a record of another owner
        (whose object is not ``info``'s account) is never replaced: Forbidden."""
        def q(db: sqlite3.Connection) -> None:
            if guard:
                row = db.execute("SELECT owner, info FROM images WHERE id=?",
                                 (image_id,)).fetchone()
                if row and owner not in (row[0], json.loads(row[1]).get("_account")):
                    raise Forbidden("the image is registered by another account")
            db.execute("INSERT OR REPLACE INTO images VALUES(?,?,?)",
                       (image_id, owner, json.dumps(info)))

        await self._run(q)

    async def image_get(self, image_id: str) -> dict[str, Any] | None:
        """An image record, or None."""
        def q(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT info FROM images WHERE id=?", (image_id,)).fetchone()
            return json.loads(row[0]) if row else None

        return await self._run(q)

    async def image_list(self) -> list[dict[str, Any]]:
        """Every image record."""
        return await self._run(lambda db: [json.loads(r[0]) for r in db.execute(
            "SELECT info FROM images ORDER BY id")])

    async def image_delete(self, image_id: str) -> None:
        """Forget an image (the object stays)."""
        def q(db: sqlite3.Connection) -> None:
            if db.execute("DELETE FROM images WHERE id=?", (image_id,)).rowcount == 0:
                raise NotFound("image not found")

        await self._run(q)

    # usage ------------------------------------------------------------------
    async def usage_by_account(self) -> dict[str, int]:
        """account -> bytes of its current object versions (what quotas charge)."""
        return await self._run(lambda db: {r[0]: int(r[1]) for r in db.execute(
            "SELECT account, sum(bytes) FROM versions WHERE cluster=0 GROUP BY account")})
