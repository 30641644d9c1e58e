"""The gateway application: one dispatcher over raw paths, one error middleware.

Paths are parsed from the raw (still %-encoded) URL so that invalid UTF-8 and
encoded slashes are seen exactly as the client sent them.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, unquote

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from archipelago.blocker.base import Blocker
from archipelago.errors import ArchipelagoError
from archipelago.metrics import GW_BYTES, GW_REQUESTS
from pithos_gw import (
    accounts,
    bulk,
    containers,
    expiry,
    objects,
    plankton,
    reads,
    slo,
    tempurl,
)
from pithos_gw.auth import auth_v1, authenticate, sharing_accounts, token_of
from pithos_gw.common import (
    BLOCKS,
    CONFIG,
    META,
    ORIGIN,
    GatewayConfig,
    HttpError,
    Target,
    fail,
    int_param,
)
from pithos_gw.hooks import (
    AUTH,
    QUOTA_ADMIN,
    AccountQuota,
    Authenticator,
    LegacyAuth,
    QuotaCharger,
)
from pithos_gw.listing import render
from pithos_gw.meta import MetaStore
from pithos_gw.quota import ChargedMetaStore
from pithos_gw.serving import make_runner
from pithos_gw.store import BlockStore

log = logging.getLogger("pithos_gw")
PREFIXES = ("/object-store/v1", "/v1")
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 411: "Length Required",
            412: "Precondition Failed", 413: "Request Entity Too Large",
            416: "Requested Range Not Satisfiable", 422: "Unprocessable Entity",
            423: "Locked", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
            507: "Insufficient Storage"}
TRANS_ID = web.RequestKey("trans_id", str)
#: Content-Disposition a TempURL GET answers with.
DISPOSITION = web.RequestKey("gw_disposition", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    if status in (204, 304):
        return web.Response(status=status, headers=headers)
    reason = _REASONS.get(status, "Error")
    if status == 412:  # Swift's exact texts ("Bad URL"), which clients and tests compare
        text = message
    else:
        text = (message if message.startswith(reason) else f"{reason}: {message}")[:300] + "\n"
    # Swift's error pages are text/html (their text is plain; clients show it as such).
    resp = web.Response(status=status, body=text.encode(), headers=headers,
                        content_type="text/html", charset="UTF-8")
    if headers and headers.get("Connection") == "close":
        resp.force_close()  # the body was not read to its end: no keep-alive
    return resp


#: The response whose headers went out already (set when a handler prepares a stream).
STARTED = web.RequestKey("gw_started", web.StreamResponse)


def _abort(request: web.Request, resp: web.StreamResponse, exc: BaseException) -> web.StreamResponse:
    """An error after the headers were sent: close the connection, as Swift does, so the
    client sees a truncated transfer instead of an error reply inside a 200 body."""
    log.warning("%s %s: %s after the response started; connection aborted",
                request.method, request.rel_url.raw_path[:200], type(exc).__name__)
    if request.transport is not None:
        request.transport.abort()
    return resp  # already prepared: aiohttp sends nothing more on the dead transport


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Prometheus counts by method and status, and body bytes (archipelago.metrics)."""
    resp: web.StreamResponse | None = None
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        GW_REQUESTS.labels(request.method, str(status)).inc()
        if request.content_length:
            GW_BYTES.labels("in").inc(request.content_length)
        if resp is not None:  # streamed bodies were written already; others are sized
            sent = resp.content_length if resp.content_length is not None else resp.body_length
            if sent:
                GW_BYTES.labels("out").inc(sent)


@web.middleware
async def catch_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn archipelago errors, HttpError and bad input into short Swift-style replies."""
    try:
        return await handler(request)
    except Exception as e:
        started = request.get(STARTED)
        if started is not None:
            return _abort(request, started, e)
        return _reply_error(request, e)


def _reply_error(request: web.Request, e: Exception) -> web.StreamResponse:
    """The short reply for an error raised before the response started."""
    if isinstance(e, HttpError):
        if e.body is not None:
            headers = {k: v for k, v in e.headers.items() if k.lower() != "content-type"}
            body = e.body if request.method != "HEAD" else b""
            if request.method == "HEAD":
                headers["Content-Length"] = "0"
            return web.Response(status=e.status, body=body, headers=headers,
                                content_type="text/html", charset="UTF-8")
        return _error(e.status, e.message, e.headers)
    if isinstance(e, ArchipelagoError):
        return _error(e.http_status, e.message)
    if isinstance(e, UnicodeDecodeError):
        return _error(400, "Invalid UTF-8")
    if isinstance(e, web.HTTPException):
        raise e
    if isinstance(e, ConnectionError | HttpProcessingError | ClientPayloadError):
        # The client went away or sent a broken body (mid-upload): nothing was recorded.
        log.info("bad or lost request body: %s", e)
        return _error(400, "Incomplete or malformed body")
    log.error("unexpected error on %s %s", request.method, request.rel_url, exc_info=e)
    return _error(500, "Internal error")


async def _trans_id(request: web.Request, response: web.StreamResponse) -> None:
    for r in (request, request.get(ORIGIN)):
        if r is not None and r.get(STARTED) is None:
            r[STARTED] = response
    if request.get(tempurl.CONFINED):
        tempurl.filter_response(response.headers)
    response.headers["X-Trans-Id"] = request.get(TRANS_ID) or ("tx" + uuid.uuid4().hex)
    response.headers.setdefault("X-Openstack-Request-Id", response.headers["X-Trans-Id"])
    if request.get(DISPOSITION) and response.status in (200, 206):
        response.headers["Content-Disposition"] = request[DISPOSITION]
    if request.headers.get("Connection", "").lower() == "keep-alive" and response.keep_alive:
        response.headers.setdefault("Connection", "keep-alive")  # echoed, as Swift
    if response.status == 204 and request.method != "CONNECT":
        # Swift says so on every 204; aiohttp drops it (RFC 9110 allows either).
        response.headers["Content-Length"] = "0"


def _seg(raw: str) -> str:
    """One %-decoded path segment; 412 for invalid UTF-8 or a NUL, as Swift."""
    try:
        text = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        fail(412, "Invalid UTF8 or contains NULL")
    return text


async def info(request: web.Request) -> web.Response:
    """GET /info: the cluster constraints, Swift style."""
    cfg = request.app[CONFIG]
    doc = {"swift": {"max_file_size": cfg.max_file_size,
                     "max_meta_name_length": cfg.max_meta_name_length,
                     "max_meta_value_length": cfg.max_meta_value_length,
                     "max_meta_count": cfg.max_meta_count,
                     "max_meta_overall_size": cfg.max_meta_overall_size,
                     "container_listing_limit": cfg.container_listing_limit,
                     "account_listing_limit": cfg.container_listing_limit,
                     "max_container_name_length": cfg.max_container_name_length,
                     "max_object_name_length": cfg.max_object_name_length,
                     "version": "archipelago",
                     "policies": [{"name": "default", "default": True}]},
           "slo": {"max_manifest_segments": slo.MAX_SEGMENTS,
                   "max_manifest_size": slo.MAX_MANIFEST, "min_segment_size": 1},
           "dlo": {"max_segments": 10000},
           "bulk_delete": {"max_deletes_per_request": bulk.MAX_DELETES,
                           "max_failed_deletes": bulk.MAX_DELETES},
           "tempurl": tempurl.info(),
           "container_quotas": {},
           **({"account_quotas": {}} if QUOTA_ADMIN in request.app else {}),
           "pithos": {"block_size": request.app[BLOCKS].block_size, "block_hash": "sha256",
                      "etag": cfg.etag}}
    return web.Response(body=json.dumps(doc).encode(), content_type="application/json")


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Route a request by its raw path."""
    request[TRANS_ID] = "tx" + uuid.uuid4().hex
    raw = request.rel_url.raw_path
    if raw in ("/info", "/info/"):
        return await info(request)
    if " " in raw or (raw.startswith("/info") and unquote(raw).startswith("/info ")):
        fail(412, "Bad URL")  # a request line Swift cannot split ("GET /info asdf")
    if raw.startswith(("/auth/v1.0", "/auth/v1")):
        return await auth_v1(request)
    if raw.startswith("/public/"):
        return await reads.serve_public(request, _seg(raw[len("/public/"):]))
    for ip in plankton.PREFIXES:
        if raw == ip or raw.startswith(ip + "/"):
            user = await authenticate(request)
            parts = [_seg(p) for p in raw[len(ip):].split("/") if p]
            return await plankton.handle(request, user, parts)
    for p in PREFIXES:
        if raw in (p, p + "/"):
            if "X-Auth-User" in request.headers and "X-Auth-Token" not in request.headers:
                return await auth_v1(request, p)
            if request.method != "GET":
                fail(412, "Bad URL")
            user = await authenticate(request)
            return await _sharing_listing(request, user)
        if raw.startswith(p + "/"):
            return await _storage(request, raw[len(p) + 1:])
    fail(404, "Not Found")


async def _sharing_listing(request: web.Request, user: str) -> web.Response:
    """GET <prefix>/: the accounts sharing something with the user."""
    names = await sharing_accounts(request, user)
    marker = request.query.get("marker", "")
    limit = int_param(request, "limit", request.app[CONFIG].container_listing_limit) or 0
    items = [{"name": n} for n in names if n > marker][:limit]
    return render(request, "accounts", user, "account", items, {})


async def _storage(request: web.Request, rest: str) -> web.StreamResponse:
    acct_raw, _, rest = rest.partition("/")
    cont_raw, _, obj_raw = rest.partition("/")
    account, container, obj = _seg(acct_raw), _seg(cont_raw), _seg(obj_raw)
    if not account or (obj_raw and not container):
        fail(404, "Not Found")
    # No token: a TempURL, or an anonymous request (only a ".r:*" ACL lets it read).
    if token_of(request):
        user = await authenticate(request, account)
    elif tempurl.wanted(request):
        user = await tempurl.check(request, account, container, obj)
        request[DISPOSITION] = tempurl.disposition(request, obj) or ""
        request = tempurl.confine(request)  # answers are prepared with either request
    else:
        user = ""
    t = Target(account, container, obj, user)
    try:
        if not container:
            if "bulk-delete" in request.query and request.method in ("POST", "DELETE"):
                return await bulk.bulk_delete(request, t)
            return await accounts.handle(request, t)
        if not obj:
            return await containers.handle(request, t)
        return await objects.handle(request, t)
    except HttpError as e:
        if user or e.status != 403:
            raise
        raise HttpError(401, "Unauthorized", {
            "WWW-Authenticate": f'Swift realm="{quote(account)}"'}) from None


def make_app(blocker: Blocker, db_path: str | Path,
             config: GatewayConfig | None = None, *,
             authenticator: Authenticator | None = None,
             quota: QuotaCharger | None = None,
             mounts: dict[str, web.Application] | None = None,
             pool_size: int = 5) -> web.Application:
    """Build the gateway over ``blocker`` with metadata in ``db_path``: a SQLite file, or
    a database URL (PostgreSQL: several gateways share it).

    The caller owns the blocker (and closes it); the app opens and closes its
    metadata store through cleanup_ctx. A host may inject who tokens belong to
    (``authenticator``; default: the gateway's own v1 users), a ``quota`` charger of
    stored bytes, and sub-apps ``mounts`` (prefix -> app) served before the gateway's paths.
    """
    app = web.Application(middlewares=[count_requests, catch_errors],
                          client_max_size=64 * 1024 * 1024)
    app[BLOCKS] = BlockStore(blocker)
    app[CONFIG] = config or GatewayConfig()
    meta = (MetaStore(db_path, pool_size) if quota is None
            else ChargedMetaStore(db_path, quota, pool_size))
    app[META] = meta
    app[AUTH] = authenticator or LegacyAuth(meta)
    if isinstance(quota, AccountQuota):  # the host also shows and sets account quotas
        app[QUOTA_ADMIN] = quota

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await app[META].open()
        if isinstance(meta, ChargedMetaStore):
            await meta.reconcile()  # before serving: a crash may have left charges pending
        yield
        await app[META].close()

    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(expiry.sweeper)
    app.on_response_prepare.append(_trans_id)
    for prefix, sub in (mounts or {}).items():
        app.add_subapp(prefix, sub)
    app.router.add_route("*", r"/{tail:[\s\S]*}", dispatch)  # also names with %0A
    return app


__all__ = ["make_app", "make_runner", "GatewayConfig", "Target"]
