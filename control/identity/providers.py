"""Identity providers: how a login proves who the user is.

- LocalProvider: name (or uuid) + password (scrypt, constant time), throttled (429).
- ProxyProvider: a trusted reverse proxy (Shibboleth and the like) authenticated the user
  and names them in a header; honoured only when ``[identity] proxy_header`` is set and the
  request comes from one of ``proxy_addresses``. Off by default.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Protocol

from aiohttp import web

from archipelago.errors import ConfigError, NotFound, Unauthorized
from control.identity.throttle import Throttle
from control.identity.users import NAME_RE, User

log = logging.getLogger("control.identity")


class Provider(Protocol):
    """A way to log in; ``login`` returns None when the request is not its kind."""

    name: str

    async def login(self, request: web.Request, auth: dict[str, Any]) -> User | None:
        """The authenticated user, None (not mine), or Unauthorized/TooManyRequests."""
        ...


class LocalProvider:
    """passwordCredentials against the local password hashes."""

    name = "local"

    def __init__(self, service: Any, throttle: Throttle) -> None:
        self.service = service
        self.throttle = throttle

    async def check(self, who: str, password: str, client: str | None) -> User:
        """The user, after the throttle and the password check."""
        keys = (f"user:{who}", f"addr:{client or ''}")
        self.throttle.check(*keys)
        try:
            user: User = await self.service.check_password(who, password)
        except Unauthorized:
            self.throttle.failed(*keys)
            raise
        self.throttle.succeeded(keys[0])
        return user

    async def login(self, request: web.Request, auth: dict[str, Any]) -> User | None:
        """passwordCredentials {username, password}."""
        pc = auth.get("passwordCredentials")
        if pc is None:
            return None
        if not isinstance(pc, dict) or not isinstance(pc.get("username"), str) \
                or not isinstance(pc.get("password"), str):
            raise Unauthorized("Unauthorized: passwordCredentials needs username and password")
        return await self.check(pc["username"], pc["password"], request.remote)


class ProxyProvider:
    """The user named by a trusted front proxy's header."""

    name = "proxy"

    def __init__(self, service: Any, header: str, addresses: list[str], create: bool) -> None:
        self.service = service
        self.header = header
        self.create = create
        try:
            self.networks = [ipaddress.ip_network(a, strict=False) for a in addresses]
        except ValueError as e:
            raise ConfigError(f"[identity] proxy_addresses: {e}") from None
        if header and not self.networks:
            raise ConfigError("[identity] proxy_header is set but proxy_addresses is empty: "
                              "name the reverse proxies whose header is trusted")

    def trusted(self, request: web.Request) -> bool:
        """True when the request comes from a configured proxy address."""
        try:
            addr = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False
        return any(addr in n for n in self.networks)

    async def login(self, request: web.Request, auth: dict[str, Any]) -> User | None:
        """The header's user, if the request comes from a trusted proxy and carries it."""
        name = request.headers.get(self.header)
        if not self.header or name is None:
            return None
        if not self.trusted(request):
            log.warning("ignored %s from untrusted address %s", self.header, request.remote)
            return None
        if not NAME_RE.fullmatch(name):
            raise Unauthorized(f"Unauthorized: bad user name in {self.header}")
        try:
            user: User = await self.service.user(name)
        except NotFound:
            if not self.create:
                raise Unauthorized(f"Unauthorized: unknown user {name!r}") from None
            user, _ = await self.service.add_user(name, provider="proxy")
        if not user.active:
            raise Unauthorized("Unauthorized: user disabled")
        return user
