"""Users and tokens: creation, lookup, password and token logins, disable/enable/renew,
and the admin user of a fresh instance."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from archipelago.errors import AlreadyExists, InvalidArgument, NotFound, Unauthorized
from archipelago.hashing import token_hash
from control.host.plugin import Event
from control.identity.hot import HotPath, run
from control.identity.passwords import MAX_PASSWORD, hash_password, new_token, verify_password
from control.identity.tables import members, projects, tokens, users
from control.identity.tokencache import TokenCache

#: User names: letters, digits and . _ @ + - (e-mail addresses fit); no ':' or '/'.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


@dataclass(frozen=True)
class User:
    """A user as other plugins see it."""

    uuid: str
    name: str
    email: str
    is_admin: bool
    active: bool
    created: float
    provider: str = "local"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (no secrets)."""
        return {"uuid": self.uuid, "name": self.name, "email": self.email,
                "is_admin": self.is_admin, "active": self.active, "created": self.created,
                "provider": self.provider}


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to."""

    uuid: str
    name: str
    is_admin: bool
    #: Project uuids the user belongs to; the system project (= uuid) first.
    projects: tuple[str, ...]


# One statement per token lookup: the user, the token's expiry and the user's projects.
_TOKEN = sa.select(users.c.uuid, users.c.name, users.c.is_admin, users.c.active,
                   tokens.c.expires, members.c.project).select_from(
    tokens.join(users, tokens.c.user == users.c.uuid).outerjoin(
        members, members.c.user == users.c.uuid)).where(tokens.c.hash == sa.bindparam("k"))


def _token_rows(db: sa.Connection, key: str) -> list[Any]:
    return list(run(db, _TOKEN, {"k": key}).fetchall())


def check_name(name: str) -> str:
    """A valid user name, or InvalidArgument."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidArgument(f"bad user name {name!r}: 1-128 of letters, digits and ._@+- "
                              "starting with a letter or digit")
    return name


def _user(row: Any) -> User:
    return User(row.uuid, row.name, row.email, bool(row.is_admin), bool(row.active),
                float(row.created), row.provider)


class UsersMixin:
    """The users and tokens half of IdentityService."""

    db: Any
    events: Any
    settings: Any
    instance: Any
    hot: HotPath
    token_cache: TokenCache
    #: The wall clock tokens expire by (tests inject theirs).
    now: Any = staticmethod(time.time)

    async def _find(self, conn: AsyncConnection, who: str) -> Any:
        row = (await conn.execute(sa.select(users).where(
            sa.or_(users.c.uuid == who, users.c.name == who)))).first()
        if row is None:
            raise NotFound(f"no user {who!r}")
        return row

    async def user(self, who: str) -> User:
        """A user by name or uuid; NotFound."""
        async with self.db.read() as conn:
            return _user(await self._find(conn, who))

    async def users(self) -> list[User]:
        """Every user, by name."""
        async with self.db.read() as conn:
            return [_user(r) for r in await conn.execute(sa.select(users).order_by(users.c.name))]

    async def _issue_token(self, conn: AsyncConnection, uuid: str, kind: str,
                           lifetime: float | None = None) -> tuple[str, float]:
        tok = new_token()
        now = time.time()
        expires = now + (lifetime if lifetime is not None else self.settings.token_lifetime)
        await conn.execute(tokens.insert().values(hash=token_hash(tok), user=uuid, created=now,
                                                  expires=expires, kind=kind))
        return tok, expires

    async def add_user(self, name: str, email: str = "", password: str | None = None,
                       is_admin: bool = False, provider: str = "local",
                       uuid: str | None = None) -> tuple[User, str]:
        """Create a user, its system project and a first token; returns (user, token)."""
        check_name(name)
        if len(email) > 256 or any(c in email for c in "\r\n"):
            raise InvalidArgument("bad e-mail address")
        if password is not None and not 0 < len(password) <= MAX_PASSWORD:
            raise InvalidArgument(f"passwords are 1-{MAX_PASSWORD} characters")
        hashed = hash_password(password) if password is not None else None
        uid = uuid or str(uuidlib.uuid4())
        now = time.time()
        async with self.db.begin() as conn:
            dup = (await conn.execute(sa.select(users.c.uuid).where(
                sa.or_(users.c.name == name, users.c.uuid == name, users.c.uuid == uid)))).first()
            if dup is not None:
                raise AlreadyExists(f"user {name!r} already exists")
            await conn.execute(users.insert().values(
                uuid=uid, name=name, email=email, password=hashed, is_admin=is_admin,
                active=True, provider=provider, created=now))
            await conn.execute(projects.insert().values(uuid=uid, name=f"system:{uid}",
                                                        system=True, owner=uid, created=now))
            await conn.execute(members.insert().values(project=uid, user=uid))
            tok, _ = await self._issue_token(conn, uid, "cli")
            await self.events.emit(conn, Event("identity.user.created", {"uuid": uid, "name": name}))
        return User(uid, name, email, is_admin, True, now, provider), tok

    async def adopt_legacy(self, account: str, key: str) -> None:
        """Make a pre-control-plane v1 user an identity user: uuid = its account (its data
        stays its own), name = account, the key both its password and a token."""
        try:
            await self.user(account)
            return  # adopted already (e.g. by another request)
        except NotFound:
            pass
        await self.add_user(account, password=key, provider="legacy-v1", uuid=account)
        async with self.db.begin() as conn:
            await conn.execute(tokens.insert().values(
                hash=token_hash(key), user=account, created=time.time(),
                expires=time.time() + self.settings.token_lifetime, kind="v1-legacy"))

    async def set_active(self, who: str, active: bool) -> User:
        """Disable (revoking every token) or enable a user."""
        async with self.db.begin() as conn:
            row = await self._find(conn, who)
            await conn.execute(users.update().where(users.c.uuid == row.uuid).values(active=active))
            if not active:
                await conn.execute(tokens.delete().where(tokens.c.user == row.uuid))
        self.token_cache.drop_user(row.uuid)
        return (await self.user(row.uuid))

    async def renew_token(self, who: str) -> str:
        """Revoke every token of a user and return a new one."""
        async with self.db.begin() as conn:
            row = await self._find(conn, who)
            await conn.execute(tokens.delete().where(tokens.c.user == row.uuid))
            tok, _ = await self._issue_token(conn, row.uuid, "cli")
        self.token_cache.drop_user(row.uuid)
        return tok

    async def set_password(self, who: str, password: str) -> None:
        """Replace a user's password."""
        if not 0 < len(password) <= MAX_PASSWORD:
            raise InvalidArgument(f"passwords are 1-{MAX_PASSWORD} characters")
        hashed = hash_password(password)
        async with self.db.begin() as conn:
            row = await self._find(conn, who)
            await conn.execute(users.update().where(users.c.uuid == row.uuid)
                               .values(password=hashed))
        self.token_cache.drop_user(row.uuid)

    async def mint_token(self, who: str, lifetime: float | None = None) -> str:
        """A new token of an active user (for a service acting on its behalf)."""
        async with self.db.begin() as conn:
            row = await self._find(conn, who)
            if not row.active:
                raise Unauthorized(f"user {row.name!r} is disabled")
            tok, _ = await self._issue_token(conn, row.uuid, "minted", lifetime)
        return tok

    async def token_info(self, token: str) -> tuple[Principal, float]:
        """(Principal, expiry) of a valid token; Unauthorized: unknown, expired or disabled.
        Validated tokens are cached for [identity] token_cache_ttl seconds (tokencache)."""
        if not isinstance(token, str) or not 0 < len(token) <= 256:
            raise Unauthorized("Unauthorized: invalid token")
        key = token_hash(token)
        hit = self.token_cache.get(key)
        if hit is None:
            rows = await self.hot.read(lambda c: _token_rows(c, key))
            if not rows:
                raise Unauthorized("Unauthorized: invalid token")
            uuid, name, is_admin, active, expires = rows[0][:5]
            if expires <= self.now():
                raise Unauthorized("Unauthorized: token expired")
            if not active:
                raise Unauthorized("Unauthorized: user disabled")
            projs = sorted(r[5] for r in rows if r[5] is not None and r[5] != uuid)
            hit = Principal(uuid, name, bool(is_admin), (uuid, *projs)), float(expires)
            self.token_cache.put(key, *hit)
        elif hit[1] <= self.now():
            self.token_cache.drop(key)
            raise Unauthorized("Unauthorized: token expired")
        return hit

    async def authenticate(self, token: str) -> Principal:
        """The Principal of a valid token; Unauthorized otherwise."""
        return (await self.token_info(token))[0]

    async def check_password(self, who: str, password: str) -> User:
        """The user whose name/uuid and password match; Unauthorized otherwise (same cost)."""
        if not isinstance(password, str) or not isinstance(who, str):
            raise Unauthorized("Unauthorized: bad credentials")
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(users).where(
                sa.or_(users.c.uuid == who, users.c.name == who)))).first()
        ok = verify_password(password[:MAX_PASSWORD + 1], row.password if row else None)
        if row is None or not ok or len(password) > MAX_PASSWORD:
            raise Unauthorized("Unauthorized: bad credentials")
        if not row.active:
            raise Unauthorized("Unauthorized: user disabled")
        return _user(row)

    async def login_token(self, who: str, kind: str = "login",
                          lifetime: float | None = None) -> tuple[str, float]:
        """A new token for an (already authenticated) user: (token, expiry)."""
        async with self.db.begin() as conn:
            row = await self._find(conn, who)
            return await self._issue_token(conn, row.uuid, kind, lifetime)

    async def revoke_token(self, token: str) -> bool:
        """Forget one token (a web UI logout); True when it existed."""
        if not isinstance(token, str) or not 0 < len(token) <= 256:
            return False
        key = token_hash(token)
        async with self.db.begin() as conn:
            r = await conn.execute(tokens.delete().where(tokens.c.hash == key))
        self.token_cache.drop(key)
        return bool(r.rowcount)

    async def purge_tokens(self) -> int:
        """Delete expired tokens; returns how many."""
        async with self.db.begin() as conn:
            r = await conn.execute(tokens.delete().where(tokens.c.expires <= time.time()))
        return int(r.rowcount or 0)

    async def catalogs(self, uuids: list[str] | None,
                       names: list[str] | None) -> dict[str, dict[str, str]]:
        """uuid <-> display name (``None`` lists mean every user)."""
        async with self.db.read() as conn:
            q = sa.select(users.c.uuid, users.c.name)
            by_uuid = {} if uuids == [] else {r.uuid: r.name for r in await conn.execute(
                q if uuids is None else q.where(users.c.uuid.in_(uuids)))}
            by_name = {} if names == [] else {r.name: r.uuid for r in await conn.execute(
                q if names is None else q.where(users.c.name.in_(names)))}
        return {"uuid_catalog": by_uuid, "displayname_catalog": by_name}

    @property
    def admin_file(self) -> Path:
        """DATA_DIR/admin.json: the first admin's name, uuid and password (0600)."""
        return Path(self.instance.data_dir) / "admin.json"

    async def ensure_admin(self) -> User | None:
        """Create the admin user (and admin.json) when no admin exists; returns it if created."""
        async with self.db.read() as conn:
            if (await conn.execute(sa.select(users.c.uuid).where(users.c.is_admin))).first():
                return None
        password = secrets.token_urlsafe(18)
        try:
            user, _ = await self.add_user(self.settings.admin_name, password=password,
                                          is_admin=True)
        except AlreadyExists:
            return None  # another process created it first
        tmp = self.admin_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"name": user.name, "uuid": user.uuid, "password": password}, f)
            f.write("\n")
        tmp.replace(self.admin_file)
        return user
