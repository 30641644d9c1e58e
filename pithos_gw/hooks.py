"""What the gateway lets a host inject: an Authenticator (token -> account) and a
QuotaCharger (two-phase charges of stored bytes). pithos_gw never imports control: the
control plane implements these protocols and hands them to make_app().

Without an injected Authenticator the gateway keeps its own v1 user table (LegacyAuth);
without a QuotaCharger nothing is charged.
"""

from __future__ import annotations

import hmac
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from archipelago.errors import Unauthorized
from archipelago.hashing import token_hash
from pithos_gw.meta import MetaStore

#: The pithos_gw resource charged for stored bytes.
DISKSPACE = "pithos.diskspace"


class Authenticator(Protocol):
    """Who a request is: the account (Pithos+: the user uuid) a token belongs to."""

    async def authenticate(self, token: str, client: str | None) -> str:
        """The account of a valid token; Unauthorized otherwise (no, expired, disabled)."""
        ...

    async def login_v1(self, user: str, key: str, client: str | None) -> tuple[str, str]:
        """/auth/v1.0: (account, token) for X-Auth-User/X-Auth-Key; Unauthorized or
        TooManyRequests."""
        ...


class QuotaCharger(Protocol):
    """Two-phase charges of ``pithos.diskspace`` (bytes of current object versions).

    A charger may settle a charge at issue (identity does for growth: one transaction
    fewer per upload); its accept then does nothing and its reject gives the bytes back.
    """

    async def issue(self, account: str, delta: int, name: str) -> Any:
        """Reserve ``delta`` bytes (negative frees); a serial, or QuotaExceeded."""
        ...

    async def accept(self, serial: Any) -> None:
        """Make a reservation usage (after the metadata commit)."""
        ...

    async def reject(self, serial: Any) -> None:
        """Cancel a reservation (the metadata change failed)."""
        ...

    async def reconcile(self, usage: dict[str, int]) -> None:
        """At start: drop this gateway's pending charges and set each account's usage to
        the bytes it really stores (``usage``: account -> bytes; absent accounts store 0)."""
        ...


@runtime_checkable
class AccountQuota(Protocol):
    """Optional, beside a QuotaCharger: the account's byte quota as Swift's account_quotas
    shows it (X-Account-Meta-Quota-Bytes), and who may set it."""

    async def is_admin(self, account: str) -> bool:
        """True when the account belongs to an administrator (Swift's reseller admin)."""
        ...

    async def limit(self, account: str) -> int | None:
        """The account's byte quota; None when the host does not manage the account."""
        ...

    async def set_limit(self, account: str, limit: int | None) -> None:
        """Set the account's byte quota (None: back to the default); NotFound for an
        account the host does not manage."""
        ...

    async def check(self, account: str, delta: int) -> None:
        """QuotaExceeded when ``delta`` more bytes would pass the quota (before an upload
        of known size; the charge at commit stays the authority)."""
        ...


class LegacyAuth:
    """The gateway's own v1 users (MetaStore users table): the key doubles as the token."""

    def __init__(self, meta: MetaStore) -> None:
        self.meta = meta

    async def authenticate(self, token: str, client: str | None) -> str:
        """The account of a key."""
        user = await self.meta.user_by_token(token)
        if user is None:
            raise Unauthorized("Unauthorized: invalid token")
        return user

    async def login_v1(self, user: str, key: str, client: str | None) -> tuple[str, str]:
        """Check X-Auth-User/X-Auth-Key (also Swift tempauth "account:user")."""
        account = user
        stored = await self.meta.user_key_hash(account)
        if stored is None and ":" in user:
            account = user.split(":", 1)[0]
            stored = await self.meta.user_key_hash(account)
        if stored is None or not hmac.compare_digest(stored, token_hash(key)):
            raise Unauthorized("Unauthorized: bad credentials")
        return account, key  # the key is the token (only its hash is stored)


AUTH = web.AppKey("auth", Authenticator)
QUOTA_ADMIN = web.AppKey("quota_admin", AccountQuota)
