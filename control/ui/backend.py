"""What the UI's pages stand on: sessions (identity tokens in a cookie), CSRF tokens, and
calls to the API server's own HTTP APIs (gateway, Plankton, billing) on a user's behalf.

The UI is a client like any other: it passes the session's token as X-Auth-Token, so every
API keeps checking who asks; it never reads another plugin's tables.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from archipelago.errors import (
    AlreadyExists,
    ArchipelagoError,
    BackendUnavailable,
    Forbidden,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    TooManyRequests,
    Unauthorized,
)
from control.ui.config import UiConfig

COOKIE = "archip_session"
#: HTTP status of an API answer -> the error the UI shows.
_ERRORS: dict[int, type[ArchipelagoError]] = {
    400: InvalidArgument, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: AlreadyExists,
    413: QuotaExceeded, 429: TooManyRequests}


def path_of(*parts: str) -> str:
    """URL path segments, each quoted (names may hold '/', '?', '<', spaces ...)."""
    return "/".join(quote(p, safe="") for p in parts)


class Backend:
    """Sessions, CSRF, and the UI's HTTP client to the API server it runs in."""

    def __init__(self, ctx: Any, settings: UiConfig) -> None:
        self.ctx = ctx
        self.settings = settings
        self._secret: bytes | None = None
        self._http: aiohttp.ClientSession | None = None

    # -- services ---------------------------------------------------------------------------
    @property
    def identity(self) -> Any:
        """The identity service."""
        return self.ctx.service("identity")

    def has(self, name: str) -> bool:
        """Is the plugin service ``name`` enabled (pages of disabled plugins are hidden)?"""
        return bool(self.ctx.has_service(name))

    # -- sessions ---------------------------------------------------------------------------
    @property
    def secret(self) -> bytes:
        """The key of CSRF tokens: DATA_DIR/ui.secret (0600), made on first use."""
        if self._secret is None:
            path = self.ctx.instance.data_dir / "ui.secret"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                self._secret = path.read_bytes()
            else:
                key = secrets.token_bytes(32)
                with os.fdopen(fd, "wb") as f:
                    f.write(key)
                self._secret = key
        return self._secret

    def csrf(self, token: str) -> str:
        """The CSRF token of a session: bound to its identity token, useless without the cookie."""
        return hmac.new(self.secret, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, token: str, sent: str | None) -> bool:
        """Does ``sent`` match the session's CSRF token (constant time)?"""
        return bool(sent) and hmac.compare_digest(self.csrf(token), str(sent))

    async def login(self, request: web.Request, username: str, password: str) -> tuple[str, float]:
        """Check a password (identity's throttled local provider); a session token and expiry."""
        user = await self.identity.local.check(username, password, request.remote)
        return await self.identity.login_token(user.uuid, "ui", self.settings.session_lifetime)

    async def proxy_login(self, request: web.Request) -> tuple[str, float] | None:
        """The front proxy's user (identity's proxy provider, when configured), else None."""
        user = await self.identity.proxy.login(request, {})
        if user is None:
            return None
        return await self.identity.login_token(user.uuid, "ui", self.settings.session_lifetime)

    def set_cookie(self, request: web.Request, resp: web.StreamResponse, token: str) -> None:
        """The session cookie: HttpOnly, SameSite=Strict, Secure over TLS, path /ui."""
        resp.set_cookie(COOKIE, token, path="/ui", httponly=True, samesite="Strict",
                        secure=request.secure or self.settings.secure_cookie,
                        max_age=self.settings.session_lifetime)

    # -- HTTP calls to the API server ---------------------------------------------------------
    def _base(self, request: web.Request) -> str:
        # The API server this request reached, by its socket (not Host: a client sets that).
        host, port = request.transport.get_extra_info("sockname")[:2]  # type: ignore[union-attr]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if request.secure else 'http'}://{host}:{port}"

    @property
    def http(self) -> aiohttp.ClientSession:
        """The client session (made lazily on the server's loop)."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(auto_decompress=False,
                                               timeout=aiohttp.ClientTimeout(total=None,
                                                                             sock_read=120))
        return self._http

    async def call(self, request: web.Request, method: str, path: str, *,
                   headers: dict[str, str] | None = None, data: Any = None,
                   ok: tuple[int, ...] = (200, 201, 202, 204)) -> aiohttp.ClientResponse:
        """``method path`` on the API server as the session's user; errors become
        archipelago errors (the response is left open for streaming: release it)."""
        hdrs = {"X-Auth-Token": request["ui_token"], **(headers or {})}
        try:
            resp = await self.http.request(method, self._base(request) + path, headers=hdrs,
                                           data=data, ssl=False, allow_redirects=False)
        except aiohttp.ClientError as e:
            raise BackendUnavailable(f"API server call failed: {e}") from None
        if resp.status not in ok:
            text = (await resp.read()).decode(errors="replace")[:300]
            resp.release()
            raise _ERRORS.get(resp.status, BackendUnavailable)(_message(text) or resp.reason)
        return resp

    async def json(self, request: web.Request, method: str, path: str, **kw: Any) -> Any:
        """A call whose answer is JSON (None when empty)."""
        resp = await self.call(request, method, path, **kw)
        try:
            raw = await resp.read()
        finally:
            resp.release()
        return json.loads(raw) if raw.strip() else None

    async def close(self) -> None:
        """Close the client session."""
        if self._http is not None:
            await self._http.close()


def _message(text: str) -> str:
    """The message of an API fault: OpenStack JSON ({"x": {"message"}}) or plain text."""
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(doc, dict) and len(doc) == 1:
        inner = next(iter(doc.values()))
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return text.strip()
