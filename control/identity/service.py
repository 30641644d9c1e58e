"""IdentityService: the interface the identity plugin offers (``ctx.service("identity")``),
and the gateway hooks it implements (pithos_gw.hooks Authenticator and QuotaCharger)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
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
#: Accounts whose quota room GatewayQuota remembers at most (all forgotten beyond).
MAX_ROOM_VIEWS = 10_000


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


@dataclass(frozen=True)
class Settled:
    """A gateway charge accepted at issue (its commission's serial and what it charged)."""

    serial: int
    account: str
    delta: int
    name: str


class GatewayQuota:
    """pithos_gw QuotaCharger and AccountQuota: pithos.diskspace on the account's system
    project (X-Account-Meta-Quota-Bytes through the Swift API; admins set it)."""

    def __init__(self, service: IdentityService,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self._users: set[str] = set()
        self.clock = clock
        #: account -> (limit, usage it has at least, until when the view is trusted):
        #: lets ``check`` pass an upload without a database read (see there).
        self._room: dict[str, tuple[int, int, float]] = {}

    def _saw(self, account: str, limit: int, usage: int) -> None:
        ttl = self.service.settings.token_cache_ttl
        if ttl <= 0:
            return
        if len(self._room) >= MAX_ROOM_VIEWS:
            self._room.clear()
        self._room[account] = (limit, usage, self.clock() + ttl)

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
        """Reserve ``delta`` bytes for the account's owner (QuotaExceeded: 413).

        Growth is accepted in the same transaction (the upload is complete, only the
        metadata commit follows; a failed commit gives it back by a compensating
        commission, a crash before it is corrected by ``reconcile``): one write fewer
        under the gateway's per-account lock. The limit is checked exactly as for a
        pending charge (usage_max). Frees stay pending until the commit: the space
        they release is only reusable once the deletion happened."""
        if not await self._known(account):
            return None
        provs = provisions(account, account, DISKSPACE, delta)
        label = f"{GATEWAY_PREFIX} {name}"[:256]  # object names reach 1024 characters
        if delta > 0:
            serial = await self.service.issue_commission(provs, label, auto_accept=True)
            room = self._room.get(account)
            if room is not None:
                self._room[account] = (room[0], room[1] + delta, room[2])
            return Settled(serial, account, delta, name)
        return await self.service.issue_commission(provs, label)

    async def accept(self, serial: Any) -> None:
        """After the metadata commit."""
        if serial is not None and not isinstance(serial, Settled):
            await self.service.accept(serial)

    async def reject(self, serial: Any) -> None:
        """The metadata change failed."""
        if isinstance(serial, Settled):
            provs = provisions(serial.account, serial.account, DISKSPACE, -serial.delta)
            await self.service.issue_commission(
                provs, f"{GATEWAY_PREFIX} undo {serial.name}"[:256], force=True,
                auto_accept=True)
        elif serial is not None:
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
        self._room.pop(account, None)

    async def check(self, account: str, delta: int) -> None:
        """QuotaExceeded, worded as a refused commission, when ``delta`` would not fit.

        Advisory (the charge at commit decides): an upload that fits the room this
        process saw less than token_cache_ttl seconds ago passes without a read (a
        stale view only lets the commit refuse it instead); one that does not fit is
        checked against the database, so nothing is refused on a stale view."""
        if delta <= 0 or not await self._known(account):
            return
        room = self._room.get(account)
        if room is not None and self.clock() < room[2] and room[1] + delta <= room[0]:
            return
        limit, usage = await self._holding(account)
        self._saw(account, limit, usage)
        if usage + delta > limit:
            raise QuotaExceeded(f"Quota exceeded: {DISKSPACE} of user:{account} would go "
                                f"above its limit (limit {limit}, usage {usage}, "
                                f"requested {delta:+d})")
