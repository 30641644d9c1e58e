"""Authentication (v1 auth, tokens) and sharing-based access checks."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from archipelago.errors import Unauthorized
from pithos_gw import acl
from pithos_gw.common import META, HttpError, Target, fail
from pithos_gw.hooks import AUTH


def token_of(request: web.Request) -> str | None:
    """The token from X-Auth-Token or the ?X-Auth-Token= parameter."""
    return request.headers.get("X-Auth-Token") or request.query.get("X-Auth-Token")


async def authenticate(request: web.Request, realm: str = "unknown") -> str:
    """The account a request's token belongs to; 401 without a valid token (with Swift's
    ``WWW-Authenticate`` naming ``realm``, the account as it was in the path)."""
    challenge = {"WWW-Authenticate": f'Swift realm="{quote(realm)}"'}
    token = token_of(request)
    if not token:
        fail(401, "Unauthorized: no X-Auth-Token", challenge)
    try:
        return await request.app[AUTH].authenticate(token, request.remote)
    except Unauthorized as e:
        raise HttpError(401, e.message, challenge) from None


async def auth_v1(request: web.Request, prefix: str = "/v1") -> web.Response:
    """GET /auth/v1.0 with X-Auth-User/X-Auth-Key -> X-Storage-Url and X-Auth-Token."""
    user = request.headers.get("X-Auth-User") or request.headers.get("X-Storage-User")
    key = request.headers.get("X-Auth-Key") or request.headers.get("X-Storage-Pass")
    if not user or not key:
        fail(401, "Unauthorized: X-Auth-User and X-Auth-Key required")
    account, token = await request.app[AUTH].login_v1(user, key, request.remote)
    url = f"{request.scheme}://{request.host}{prefix}/{quote(account, safe='')}"
    return web.Response(status=204, headers={"X-Storage-Url": url, "X-Auth-Token": token,
                                             "X-Storage-Token": token})


def parse_sharing(value: str) -> tuple[list[str], list[str]]:
    """Parse ``read=a,b;write=c`` (empty -> no sharing); 400 when malformed."""
    read: list[str] = []
    write: list[str] = []
    value = value.strip()
    if not value:
        return read, write
    for part in value.split(";"):
        part = part.strip()
        if not part:
            continue
        kind, sep, who = part.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in ("read", "write"):
            fail(400, "Bad X-Object-Sharing")
        members = [m.strip() for m in who.split(",") if m.strip()]
        if not members or len(members) > 256:
            fail(400, "Bad X-Object-Sharing")
        (read if kind == "read" else write).extend(members)
    return sorted(set(read)), sorted(set(write))


def format_sharing(read: list[str], write: list[str]) -> str:
    """The X-Object-Sharing header value."""
    parts = []
    if read:
        parts.append("read=" + ",".join(read))
    if write:
        parts.append("write=" + ",".join(write))
    return ";".join(parts)


async def _member(request: web.Request, user: str, entries: list[str]) -> bool:
    if not user:  # an anonymous request: Pithos sharing (even "*") is for users only
        return False
    for e in entries:
        if e == "*" or e == user:
            return True
        if ":" in e:
            acct, _, group = e.partition(":")
            acc = await request.app[META].account_get(acct)
            if user in acc.groups.get(group, []):
                return True
    return False


async def access(request: web.Request, t: Target, acls: bool = True) -> str | None:
    """"owner", "write", "read", "writeonly" (a Swift write ACL without read) or None:
    what the requester may do with object ``t`` (Pithos sharing first, then, unless
    ``acls`` is False, the container's ACLs)."""
    if t.owner:
        return "owner"
    found = await request.app[META].sharing_effective(t.account, t.container, t.obj)
    if found is not None:
        _, read, write = found
        if write and await _member(request, t.user, write):
            return "write"
        if read and await _member(request, t.user, read):
            return "read"
    if not acls:
        return None
    readable, writable = await acl.may_read(request, t), await acl.may_write(request, t)
    if writable:
        return "write" if readable else "writeonly"
    return "read" if readable else None


async def require(request: web.Request, t: Target, write: bool = False) -> str:
    """403 unless the requester may read (or write) object ``t``."""
    got = await access(request, t)
    if got is None or (write and got == "read") or (not write and got == "writeonly"):
        raise HttpError(403, "Forbidden")
    return got


def require_owner(t: Target) -> None:
    """403 unless the requester owns the account."""
    if not t.owner:
        fail(403, "Forbidden")


async def sharing_accounts(request: web.Request, user: str) -> list[str]:
    """Accounts that share at least one object with ``user`` (top-level GET)."""
    out: list[str] = []
    for account, _, read, write in await request.app[META].shares():
        if account != user and account not in out and await _member(request, user,
                                                                    read + write):
            out.append(account)
    return out


async def sharing_containers(request: web.Request, user: str, account: str) -> list[str]:
    """Containers of ``account`` holding something shared with ``user``."""
    out: list[str] = []
    for _, container, read, write in await request.app[META].shares(account):
        if container not in out and await _member(request, user, read + write):
            out.append(container)
    return out
