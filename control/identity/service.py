"""IdentityService: the interface the identity plugin offers (``ctx.service("identity")``),
and the gateway hooks it implements (pithos_gw.hooks Authenticator and QuotaCharger)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from archipelago.errors import ArchipelagoError, NotFound, QuotaExceeded, Unauthorized
from control.host.webapi import token_of
from control.identity.hot import HotPath
from control.identity.projects import ProjectsMixin
from control.identity.providers import LocalProvider, ProxyProvider
from control.identity.quotas import QuotasMixin, Resource, provisions
from control.identity.throttle import Throttle
from control.identity.tokencache import TokenCache
from control.identity.users import Principal, UsersMixin
from pithos_gw.hooks import DISKSPACE

log = logging.getLogger("control.identity")
#: Names of the gateway's commissions start with this (reconciled at its start).
GATEWAY_PREFIX = "pithos:"


class IdentityService(UsersMixin, QuotasMixin, ProjectsMixin):
    """Users, tokens, projects, quotas and commissions over the control database."""

    def __init__(self, ctx: Any, settings: Any) -> None:
        self.ctx = ctx
        self.db = ctx.db
        self.events = ctx.events
        self.instance = ctx.instance
        self.settings = settings
        self.hot = HotPath(ctx.db, ctx.events)
        self.token_cache = TokenCache(settings.token_cache_ttl)
        self.throttle = Throttle(settings.login_attempts, settings.login_window)
        self.local = LocalProvider(self, self.throttle)
        self.proxy = ProxyProvider(self, settings.proxy_header, settings.proxy_addresses,
                                   settings.proxy_create_users)

    async def principal(self, request: web.Request) -> Principal:
        """Who sends ``request`` (X-Auth-Token or ?X-Auth-Token=); Unauthorized."""
        token = token_of(request)
        if not token:
            raise Unauthorized("Unauthorized: no X-Auth-Token")
        return await self.authenticate(token)

    async def open(self) -> None:
        """Register identity's resources and create the first admin (idempotent)."""
        await self.register_resource(Resource(
            DISKSPACE, unit="bytes", description="Bytes of current object versions",
            default_limit=self.settings.default_diskspace, service="object-store"))
        await self.ensure_admin()


class GatewayAuth:
    """pithos_gw Authenticator: tokens are identity tokens; accounts are user uuids.

    Users of the gateway's own v1 table (instances older than the control plane) are
    adopted on their first login: an identity user whose uuid is their old account name
    (so their data stays theirs), with their key as password and as a token.
    """

    def __init__(self, service: IdentityService) -> None:
        self.service = service

    async def _adopt(self, account: str | None, key: str) -> str | None:
        if account is None:
            return None
        try:
            await self.service.adopt_legacy(account, key)
            gw = self.service.ctx.gateway
            await self.service.set_usage(account, DISKSPACE, await gw.account_bytes(account))
        except ArchipelagoError as e:
            log.warning("cannot adopt v1 user %r: %s", account, e.message)
            return None
        return account

    async def authenticate(self, token: str, client: str | None) -> str:
        """The user uuid of a valid token."""
        try:
            return (await self.service.authenticate(token)).uuid
        except Unauthorized:
            gw = self.service.ctx.gateway
            if gw is None or not await self._adopt(await gw.legacy_token(token), token):
                raise
        return (await self.service.authenticate(token)).uuid

    async def login_v1(self, user: str, key: str, client: str | None) -> tuple[str, str]:
        """/auth/v1.0: the key is the user's password or one of its tokens (Pithos' shim);
        a password login returns a new token, a token login that same token."""
        s = self.service
        who = user
        if ":" in user:  # Swift tempauth "account:user": the account names our user
            who = user.split(":", 1)[0]
        s.throttle.check(f"user:{who}", f"addr:{client or ''}")
        try:
            p = await s.authenticate(key)
            if who in (p.uuid, p.name):
                return p.uuid, key
        except Unauthorized:
            pass
        try:
            u = await s.local.check(who, key, client)
        except Unauthorized:
            gw = s.ctx.gateway
            account = await self._adopt(await gw.legacy_login(user, key), key) if gw else None
            if account is None:
                raise
            return account, key
        token, _ = await s.login_token(u.uuid, "v1")
        return u.uuid, token


class GatewayQuota:
    """pithos_gw QuotaCharger and AccountQuota: pithos.diskspace on the account's system
    project (X-Account-Meta-Quota-Bytes through the Swift API; admins set it)."""

    def __init__(self, service: IdentityService) -> None:
        self.service = service
        self._users: set[str] = set()

    async def _known(self, account: str) -> bool:
        if account in self._users:
            return True
        try:
            await self.service.user(account)
        except Exception:  # noqa: BLE001 -- NotFound: an account no identity user owns
            return False
        self._users.add(account)
        return True

    async def issue(self, account: str, delta: int, name: str) -> Any:
        """Reserve ``delta`` bytes for the account's owner (QuotaExceeded: 413)."""
        if not await self._known(account):
            return None
        return await self.service.issue_commission(
            provisions(account, account, DISKSPACE, delta), GATEWAY_PREFIX + " " + name)

    async def accept(self, serial: Any) -> None:
        """After the metadata commit."""
        if serial is not None:
            await self.service.accept(serial)

    async def reject(self, serial: Any) -> None:
        """The metadata change failed."""
        if serial is not None:
            await self.service.reject(serial)

    async def reconcile(self, usage: dict[str, int]) -> None:
        """At the gateway's start: pending charges dropped, usage = bytes stored."""
        await self.service.reconcile_usage(DISKSPACE, usage, GATEWAY_PREFIX)

    async def _owner(self, account: str) -> Any:
        """The identity user whose account (uuid) this is, or None."""
        try:
            u = await self.service.user(account)
        except NotFound:
            return None
        return u if u.uuid == account else None  # a user *name* is no account

    async def _holding(self, account: str) -> tuple[int, int]:
        """(limit, usage with pending charges) of the account's pithos.diskspace."""
        limit, _, usage = await self.service.holding_of(f"user:{account}", f"project:{account}",
                                                        DISKSPACE)
        return limit, usage

    async def is_admin(self, account: str) -> bool:
        """True for an active administrator's account."""
        u = await self._owner(account)
        return bool(u is not None and u.is_admin and u.active)

    async def limit(self, account: str) -> int | None:
        """The account's pithos.diskspace limit (None: no identity user owns it)."""
        if await self._owner(account) is None:
            return None
        return (await self._holding(account))[0]

    async def set_limit(self, account: str, limit: int | None) -> None:
        """Set the limit (None: the configured default) in the owner's system project."""
        if await self._owner(account) is None:
            raise NotFound(f"no identity user owns account {account!r}")
        value = self.service.settings.default_diskspace if limit is None else limit
        await self.service.set_quota(account, DISKSPACE, value)

    async def check(self, account: str, delta: int) -> None:
        """QuotaExceeded, worded as a refused commission, when ``delta`` would not fit."""
        if delta <= 0 or not await self._known(account):
            return
        limit, usage = await self._holding(account)
        if usage + delta > limit:
            raise QuotaExceeded(f"Quota exceeded: {DISKSPACE} of user:{account} would go "
                                f"above its limit (limit {limit}, usage {usage}, "
                                f"requested {delta:+d})")
