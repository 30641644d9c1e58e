"""Login, logout, the dashboard (quota bars, balance, recent activity) and billing."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from archipelago.errors import ArchipelagoError, NotFound, TooManyRequests, Unauthorized
from control.ui.app import backend
from control.ui.backend import COOKIE

#: Longest user name or password the login form passes on.
MAX_FIELD = 1024
#: Quota resources in words (others show their Astakos name).
LABELS = {"pithos.diskspace": "File storage", "cyclades.disk": "Volumes",
          "cyclades.vm": "Servers", "cyclades.cpu": "CPUs of running servers",
          "cyclades.ram": "RAM of running servers", "cyclades.total_cpu": "CPUs of all servers",
          "cyclades.total_ram": "RAM of all servers", "cyclades.vmtime": "Server state",
          "cyclades.network.private": "Private networks", "storage.volume": "Volume size"}


def add_routes(r: web.UrlDispatcher) -> None:
    """Routes of this module."""
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/", dashboard)
    r.add_get("/billing", billing)
    r.add_get("/billing/chart.svg", chart)


async def login_form(request: web.Request) -> web.StreamResponse:
    """GET /ui/login (a trusted front proxy's user is logged in at once)."""
    b = backend(request)
    try:
        got = await b.proxy_login(request)
    except Unauthorized as e:
        # the proxy named a user identity refuses: the form, not a redirect loop
        resp = aiohttp_jinja2.render_template("login.html", request,
                                              {"error": e.message, "username": ""})
        resp.set_status(401)
        return resp
    if got is not None:
        resp = web.HTTPSeeOther("/ui/")
        b.set_cookie(request, resp, got[0])
        raise resp
    return aiohttp_jinja2.render_template("login.html", request, {"error": "", "username": ""})


async def login(request: web.Request) -> web.StreamResponse:
    """POST /ui/login: username + password; a session cookie and the dashboard."""
    b = backend(request)
    form = await request.post()
    username, password = str(form.get("username", ""))[:MAX_FIELD], str(form.get("password", ""))
    try:
        token, _ = await b.login(request, username, password[:MAX_FIELD + 1])
    except (Unauthorized, TooManyRequests) as e:
        status = e.http_status
        msg = ("Too many failed attempts: wait a few minutes and try again."
               if isinstance(e, TooManyRequests) else "Wrong user name or password.")
        resp = aiohttp_jinja2.render_template("login.html", request,
                                              {"error": msg, "username": username})
        resp.set_status(status)
        return resp
    resp = web.HTTPSeeOther("/ui/")
    b.set_cookie(request, resp, token)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /ui/logout: the session's token is revoked, the cookie dropped."""
    await backend(request).identity.revoke_token(request["ui_token"])
    resp = web.HTTPSeeOther("/ui/login")
    resp.del_cookie(COOKIE, path="/ui")
    raise resp


async def _quota_rows(request: web.Request) -> list[dict[str, Any]]:
    b = backend(request)
    p = request["ui_principal"]
    quotas = await b.identity.user_quotas(p.uuid)
    rows = []
    for res, q in sorted((quotas.get(p.uuid) or {}).items()):
        limit, usage = int(q.get("limit", 0)), int(q.get("usage", 0))
        rows.append({"resource": res, "label": LABELS.get(res, res), "limit": limit, "usage": usage,
                     "bytes": res in ("pithos.diskspace", "cyclades.disk", "cyclades.ram",
                                      "cyclades.total_ram")})
    return rows


async def _billing(request: web.Request, events: int) -> dict[str, Any]:
    b = backend(request)
    if not b.has("billing"):
        return {}
    try:
        bal = await b.json(request, "GET", "/billing/v1/balance")
        bill = await b.json(request, "GET", "/billing/v1/bills")
        ev = await b.json(request, "GET", f"/billing/v1/events?limit={events}") if events else None
    except ArchipelagoError as e:
        return {"billing_error": e.message}
    recent = list(reversed((ev or {}).get("events", [])))[:events]
    return {"balance": bal.get("balance"), "bill": bill, "events": recent}


@aiohttp_jinja2.template("dashboard.html")
async def dashboard(request: web.Request) -> dict[str, Any]:
    """GET /ui/: quota bars, balance, recent activity."""
    return {"quotas": await _quota_rows(request), "labels": LABELS, **await _billing(request, 8)}


@aiohttp_jinja2.template("billing.html")
async def billing(request: web.Request) -> dict[str, Any]:
    """GET /ui/billing: balance, this month's bill, the usage chart."""
    if not backend(request).has("billing"):
        raise NotFound("billing is not enabled")
    return await _billing(request, 0)


async def chart(request: web.Request) -> web.Response:
    """GET /ui/billing/chart.svg: billing's usage chart of this month."""
    b = backend(request)
    if not b.has("billing"):
        raise NotFound("billing is not enabled")
    resp = await b.call(request, "GET", "/billing/v1/chart?format=svg")
    try:
        body = await resp.read()
    finally:
        resp.release()
    return web.Response(body=body, content_type="image/svg+xml")
