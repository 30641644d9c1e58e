"""Users, sharing, public tokens and image records: the rest of the metadata store.

Mixed into MetaStore (meta.py); every method is one transaction.
"""

from __future__ import annotations

import json
import secrets
import string
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from archipelago.errors import AlreadyExists, Forbidden, InvalidArgument, NotFound
from archipelago.hashing import token_hash
from pithos_gw.meta_tables import NORMAL, images, permissions, public, run, upsert, users, versions

T = TypeVar("T")
# Built once (see meta_objects): the sharing checks of every object request.
_A, _C, _N = sa.bindparam("a"), sa.bindparam("c"), sa.bindparam("n")
_p, _v = permissions.c, versions.c
_PERM = sa.select(_p.read, _p.write).where(_p.account == _A, _p.container == _C, _p.name == _N)
_FOLDER_PERM = _PERM.join_from(permissions, versions, sa.and_(
    _v.account == _p.account, _v.container == _p.container, _v.name == _p.name,
    _v.cluster == NORMAL, sa.or_(_v.ctype == "application/directory",
                                 _v.ctype == "application/folder")))
_TOKEN = sa.select(public.c.token).where(public.c.account == _A, public.c.container == _C,
                                         public.c.name == _N)
_TOKEN_LOCKED = _TOKEN.with_for_update()


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

    async def _ro(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    # users ----------------------------------------------------------------
    async def user_add(self, account: str) -> str:
        """Create a user with a fresh random key; AlreadyExists if present, InvalidArgument
        for a name that is not a valid account (check_account_name)."""
        check_account_name(account)
        key = secrets.token_urlsafe(24)

        def q(db: sa.Connection) -> str:
            if db.execute(sa.select(users.c.account).where(users.c.account == account)).first():
                raise AlreadyExists(f"user {account!r} already exists")
            db.execute(users.insert().values(account=account, key=token_hash(key),
                                             created=time.time()))
            return key

        try:
            return await self._run(q)
        except IntegrityError:  # added by another host meanwhile
            raise AlreadyExists(f"user {account!r} already exists") from None

    async def user_list(self) -> list[tuple[str, float]]:
        """(account, creation time) of every user."""
        return await self._ro(lambda db: [(r[0], r[1]) for r in db.execute(
            sa.select(users.c.account, users.c.created).order_by(users.c.account))])

    async def user_key_hash(self, account: str) -> str | None:
        """The stored hash of a user's key (archipelago.hashing.token_hash), or None."""
        return await self._ro(lambda db: db.execute(
            sa.select(users.c.key).where(users.c.account == account)).scalar())

    async def user_by_token(self, token: str) -> str | None:
        """The account a token (the v1 key) authenticates, or None."""
        # Users are never deleted, so a positive answer can be cached for the process.
        cache: dict[str, str] = self.__dict__.setdefault("_token_cache", {})
        if token in cache:
            return cache[token]
        digest = token_hash(token)
        user = await self._ro(lambda db: db.execute(
            sa.select(users.c.account).where(users.c.key == digest)).scalar())
        if user is not None and len(cache) < 100_000:
            cache[token] = user
        return user

    # sharing and public -----------------------------------------------------
    @staticmethod
    def _perm(db: sa.Connection, account: str, container: str, name: str) -> Any:
        return run(db, _PERM, {"a": account, "c": container, "n": name}).fetchone()

    async def sharing_get(self, account: str, container: str,
                          name: str) -> tuple[list[str], list[str]]:
        """(read, write) lists of an object; empty when not shared."""
        def q(db: sa.Connection) -> tuple[list[str], list[str]]:
            row = self._perm(db, account, container, name)
            return (json.loads(row[0]), json.loads(row[1])) if row else ([], [])

        return await self._ro(q)

    @classmethod
    def _effective(cls, db: sa.Connection, account: str, container: str,
                   name: str) -> tuple[str, list[str], list[str]] | None:
        row = cls._perm(db, account, container, name)
        if row:
            return name, json.loads(row[0]), json.loads(row[1])
        parts = name.split("/")
        for i in range(len(parts) - 1, 0, -1):
            path = "/".join(parts[:i])
            row = run(db, _FOLDER_PERM, {"a": account, "c": container, "n": path}).fetchone()
            if row:
                return path, json.loads(row[0]), json.loads(row[1])
        return None

    async def sharing_effective(self, account: str, container: str,
                                name: str) -> tuple[str, list[str], list[str]] | None:
        """(path, read, write) governing an object: its own sharing, else that of the
        closest ancestor folder (an application/directory object); None if unshared."""
        return await self._ro(self._effective, account, container, name)

    @staticmethod
    def _token(db: sa.Connection, account: str, container: str, name: str,
               lock: bool = False) -> str | None:
        row = run(db, _TOKEN_LOCKED if lock else _TOKEN,
                  {"a": account, "c": container, "n": name}).fetchone()
        return row[0] if row else None

    async def object_acl(self, account: str, container: str, name: str
                         ) -> tuple[tuple[str, list[str], list[str]] | None, str | None]:
        """Effective sharing and public token of an object, in one round trip."""
        return await self._ro(lambda db: (self._effective(db, account, container, name),
                                          self._token(db, account, container, name)))

    async def sharing_set(self, account: str, container: str, name: str, read: list[str],
                          write: list[str]) -> None:
        """Set (or with two empty lists remove) the sharing of an object."""
        def q(db: sa.Connection) -> None:
            db.execute(permissions.delete().where(
                permissions.c.account == account, permissions.c.container == container,
                permissions.c.name == name))
            if read or write:
                db.execute(permissions.insert().values(
                    account=account, container=container, name=name, read=json.dumps(read),
                    write=json.dumps(write)))

        await self._run(q)

    async def shares(self, account: str | None = None
                     ) -> list[tuple[str, str, list[str], list[str]]]:
        """(account, container, read, write) of shared objects (of one account, or all)."""
        def q(db: sa.Connection) -> list[tuple[str, str, list[str], list[str]]]:
            p = permissions.c
            stmt = sa.select(p.account, p.container, p.read, p.write)
            if account is not None:
                stmt = stmt.where(p.account == account)
            return [(r[0], r[1], json.loads(r[2]), json.loads(r[3]))
                    for r in db.execute(stmt.order_by(p.account, p.container))]

        return await self._ro(q)

    async def public_get(self, account: str, container: str, name: str) -> str | None:
        """The public token of an object, or None."""
        return await self._ro(self._token, account, container, name)

    async def public_set(self, account: str, container: str, name: str, on: bool) -> str | None:
        """Publish (returns the 16-character token) or unpublish an object."""
        alphabet = string.ascii_letters + string.digits
        token = "".join(secrets.choice(alphabet) for _ in range(16))

        def q(db: sa.Connection) -> str | None:
            old = self._token(db, account, container, name, lock=True)
            if not on:
                db.execute(public.delete().where(
                    public.c.account == account, public.c.container == container,
                    public.c.name == name))
                return None
            if old:
                return str(old)
            db.execute(public.insert().values(token=token, account=account,
                                              container=container, name=name))
            return token

        return await self._run(q)

    async def public_lookup(self, token: str) -> tuple[str, str, str] | None:
        """(account, container, name) of a public token."""
        def q(db: sa.Connection) -> tuple[str, str, str] | None:
            row = db.execute(sa.select(public.c.account, public.c.container, public.c.name)
                             .where(public.c.token == token)).first()
            return (row[0], row[1], row[2]) if row else None

        return await self._ro(q)

    # images -----------------------------------------------------------------
    async def image_put(self, image_id: str, owner: str, info: dict[str, Any],
                        guard: bool = False) -> None:
        """Create or replace an image record; with ``guard``, a record of another owner
        (whose object is not ``info``'s account) is never replaced: Forbidden."""
        def q(db: sa.Connection) -> None:
            if guard:
                row = db.execute(sa.select(images.c.owner, images.c.info).where(
                    images.c.id == image_id).with_for_update()).first()
                if row and owner not in (row[0], json.loads(row[1]).get("_account")):
                    raise Forbidden("the image is registered by another account")
            upsert(db, images, {"id": image_id}, {"owner": owner, "info": json.dumps(info)})

        await self._run(q)

    async def image_get(self, image_id: str) -> dict[str, Any] | None:
        """An image record, or None."""
        info = await self._ro(lambda db: db.execute(
            sa.select(images.c.info).where(images.c.id == image_id)).scalar())
        return json.loads(info) if info is not None else None

    async def image_list(self) -> list[dict[str, Any]]:
        """Every image record."""
        return await self._ro(lambda db: [json.loads(r[0]) for r in db.execute(
            sa.select(images.c.info).order_by(images.c.id))])

    async def image_delete(self, image_id: str) -> None:
        """Forget an image (the object stays)."""
        def q(db: sa.Connection) -> None:
            if db.execute(images.delete().where(images.c.id == image_id)).rowcount == 0:
                raise NotFound("image not found")

        await self._run(q)

    # usage ------------------------------------------------------------------
    async def usage_by_account(self) -> dict[str, int]:
        """account -> bytes of its current object versions (what quotas charge)."""
        v = versions.c
        return await self._ro(lambda db: {r[0]: int(r[1]) for r in db.execute(
            sa.select(v.account, sa.func.sum(v.bytes)).where(v.cluster == NORMAL)
            .group_by(v.account))})
