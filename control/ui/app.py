"""The /ui sub-app: Jinja2 templates (autoescaped), the session and CSRF middleware, errors
as pages, and the routes of every page module."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from archipelago.errors import ArchipelagoError, Forbidden, Unauthorized
from control.ui.backend import COOKIE, Backend

log = logging.getLogger("control.ui")
HERE = Path(__file__).parent
BACKEND = web.AppKey("ui_backend", Backend)
#: Paths served without a session.
PUBLIC = ("/ui/login", "/ui/static/")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def backend(request: web.Request) -> Backend:
    """The UI backend of a request."""
    return request.app[BACKEND]


def nav(b: Backend) -> list[tuple[str, str]]:
    """(label, path) of the navigation; pages of plugins that are not enabled are left out."""
    items = [("Dashboard", "/ui/")]
    if b.has("compute"):
        items += [("Servers", "/ui/servers"), ("Volumes", "/ui/volumes")]
    items += [("Images", "/ui/images"), ("Files", "/ui/files")]
    if b.has("billing"):
        items.append(("Billing", "/ui/billing"))
    return items


async def _context(request: web.Request) -> dict[str, Any]:
    b = backend(request)
    p = request.get("ui_principal")
    return {"user": p, "csrf": request.get("ui_csrf", ""), "nav": nav(b) if p else [],
            "path": request.path}


def _render_error(request: web.Request, status: int, message: str) -> web.Response:
    resp = aiohttp_jinja2.render_template("error.html", request,
                                          {"status": status, "message": message})
    resp.set_status(status)
    return resp


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Archipelago errors become a readable page with the right status (never a traceback)."""
    try:
        return await handler(request)
    except Unauthorized:
        if request.method in SAFE_METHODS:
            resp = web.HTTPSeeOther("/ui/login")
            resp.del_cookie(COOKIE, path="/ui")
            raise resp from None
        return _render_error(request, 401, "Your session has ended: please log in again.")
    except ArchipelagoError as e:
        return _render_error(request, e.http_status, e.message)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _render_error(request, e.status, e.reason)
    except Exception:  # noqa: BLE001 -- a page, never a traceback
        log.exception("unexpected error on %s %s", request.method, request.rel_url)
        return _render_error(request, 500, "Internal error")


def same_origin(request: web.Request) -> bool:
    """No Origin (old browsers, scripts) or an Origin naming this host."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin != "null" and origin.split("://", 1)[-1] == request.host


@web.middleware
async def session(request: web.Request, handler: Any) -> web.StreamResponse:
    """Who asks (the cookie's identity token), and a CSRF token on every state change."""
    if request.method not in SAFE_METHODS and not same_origin(request):
        # forged cross-site requests, the login form's included (login CSRF)
        raise Forbidden("requests from other sites are refused")
    if request.path.startswith(PUBLIC):
        return await handler(request)
    b = backend(request)
    token = request.cookies.get(COOKIE)
    if not token:
        raise Unauthorized("no session")
    request["ui_principal"] = await b.identity.authenticate(token)
    request["ui_token"] = token
    request["ui_csrf"] = b.csrf(token)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("X-CSRF-Token")
        if sent is None and request.content_type in ("application/x-www-form-urlencoded",
                                                     "multipart/form-data"):
            sent = (await request.post()).get("csrf")  # type: ignore[assignment]
        if not b.csrf_ok(token, sent if isinstance(sent, str) else None):
            raise Forbidden("the form's security token is missing or wrong: reload the page")
    resp = await handler(request)
    # Pages hold per-user data: no shared caches; no framing (clickjacking).
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


@web.middleware
async def headers(request: web.Request, handler: Any) -> web.StreamResponse:
    """Security headers on every UI response."""
    resp = await handler(request)
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault("Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                            "frame-ancestors 'none'")
    return resp


def make_app(b: Backend) -> web.Application:
    """The /ui sub-app."""
    from control.ui import pages_files, pages_home, pages_images, pages_servers, pages_volumes

    app = web.Application(middlewares=[headers, errors, session], client_max_size=1 << 20)
    app[BACKEND] = b
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                               autoescape=True, context_processors=[_context])
    env.filters["size"] = human_size
    env.globals["static"] = lambda name: f"/ui/static/{name}"
    app.router.add_static("/static/", HERE / "static", append_version=True)
    for mod in (pages_home, pages_files, pages_images, pages_servers, pages_volumes):
        mod.add_routes(app.router)
    return app


def human_size(n: Any) -> str:
    """1536 -> "1.5 KiB"."""
    try:
        v = float(n)
    except (TypeError, ValueError):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"
