"""The billing HTTP API under /billing/v1 (JSON; faults in the OpenStack shape).

Every route needs an identity token (X-Auth-Token): users see their own figures, admins
anyone's (``?user=`` takes a uuid or a name) and alone set prices and add credits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from archipelago.errors import Forbidden, InvalidArgument, Unauthorized
from control.billing.bill import rounded
from control.billing.chart import FORMATS, render
from control.billing.periods import parse_time
from control.host.webapi import make_subapp, read_json, token_of

if TYPE_CHECKING:
    from control.billing.plugin import BillingPlugin

PLUGIN = web.AppKey("billing_plugin", Any)
MAX_EVENTS = 10_000


async def _caller(request: web.Request) -> Any:
    token = token_of(request)
    if not token:
        raise Unauthorized("no X-Auth-Token")
    return await request.app[PLUGIN].authenticate(token)


async def _target(request: web.Request, user: str | None = None) -> str:
    """The user a request is about: the caller, or (admins only) the one named."""
    caller = await _caller(request)
    plugin = request.app[PLUGIN]
    named = user or request.query.get("user")
    if not named:
        return str(caller.uuid)
    uuid = await plugin.resolve_user(named)
    if uuid != caller.uuid and not caller.is_admin:
        raise Forbidden("users see only their own billing; admins see anyone's")
    return uuid


async def _admin(request: web.Request) -> Any:
    caller = await _caller(request)
    if not caller.is_admin:
        raise Forbidden("only admins set prices and add credits")
    return caller


def _until(request: web.Request) -> Any:
    text = request.query.get("until")
    return parse_time(text) if text else None


async def balance(request: web.Request) -> web.Response:
    """GET /balance[?user=][&at=]: credits added minus charges, open usage charged up to now."""
    user = await _target(request)
    at = parse_time(request.query["at"]) if "at" in request.query else None
    svc = request.app[PLUGIN].service
    value = await svc.balance(user, at)
    return web.json_response({"user": user, "balance": str(rounded(value)),
                              "at": (at or svc.now()).isoformat()})


async def aquarium_balance(request: web.Request) -> web.Response:
    """GET /user/{id}/balance: Aquarium's shape {"userId", "balance"}."""
    user = await _target(request, request.match_info["id"])
    return web.json_response(await request.app[PLUGIN].service.balance_dict(user))


async def bill(request: web.Request) -> web.Response:
    """GET /bills[/{month}][?until=]: the month's bill (lines, credits added, total)."""
    user = await _target(request)
    got = await request.app[PLUGIN].service.bill(user, request.match_info.get("month"), _until(request))
    return web.json_response(got.to_dict())


async def usage(request: web.Request) -> web.Response:
    """GET /usage[?month=][&until=]: lines per resource and instance."""
    user = await _target(request)
    period, lines = await request.app[PLUGIN].service.usage(user, request.query.get("month"),
                                                            _until(request))
    return web.json_response({"user": user, "month": period.month, "from": period.start.isoformat(),
                              "until": period.end.isoformat(),
                              "usage": [line.to_dict() for line in lines]})


async def events(request: web.Request) -> web.Response:
    """GET /events[?month=][&limit=]: the user's usage events, oldest first."""
    user = await _target(request)
    try:
        limit = int(request.query.get("limit", "1000"))
    except ValueError:
        raise InvalidArgument("limit must be an integer") from None
    if not 0 < limit <= MAX_EVENTS:
        raise InvalidArgument(f"limit must be between 1 and {MAX_EVENTS}")
    svc = request.app[PLUGIN].service
    start = end = None
    if "month" in request.query:
        p = svc.period(request.query["month"], None)
        start, end = p.start, p.end
    found = await svc.events(user, start, end, limit)
    return web.json_response({"user": user, "events": [e.to_dict() for e in found]})


async def chart(request: web.Request) -> web.Response:
    """GET /chart[?month=][&until=][&format=svg|png]: credits charged per resource over the month."""
    user = await _target(request)
    fmt = request.query.get("format", "svg")
    if fmt not in FORMATS:
        raise InvalidArgument(f"bad chart format {fmt!r}: svg or png")
    period, days, series = await request.app[PLUGIN].service.daily(
        user, request.query.get("month"), _until(request))
    image = render(f"Charges per resource, {period.month}", days, series, fmt)
    return web.Response(body=image, content_type=FORMATS[fmt])


async def prices(request: web.Request) -> web.Response:
    """GET /prices: every price version (any signed-in user)."""
    await _caller(request)
    found = await request.app[PLUGIN].service.prices()
    return web.json_response({"prices": [price_dict(p) for p in found]})


def price_dict(p: Any) -> dict[str, Any]:
    """JSON form of a price version."""
    return {"resource": p.resource, "state": p.state, "project": p.project, "price": str(p.price),
            "unit": p.unit.name, "from": p.effective.isoformat()}


async def set_price(request: web.Request) -> web.Response:
    """POST /prices {"resource", "price", "unit"?, "from"?, "state"?, "project"?} (admins)."""
    await _admin(request)
    body = await read_json(request, {})
    if not isinstance(body, dict) or "resource" not in body or "price" not in body:
        raise InvalidArgument("expected {\"resource\": ..., \"price\": ...}")
    start = parse_time(body["from"]) if body.get("from") else None
    p = await request.app[PLUGIN].service.set_price(
        str(body["resource"]), str(body["price"]), body.get("unit"), start,
        str(body.get("state") or ""), str(body.get("project") or ""))
    return web.json_response(price_dict(p), status=201)


async def add_credit(request: web.Request) -> web.Response:
    """POST /credits {"user", "amount"} (admins): credits added to a user's wallet."""
    caller = await _admin(request)
    body = await read_json(request, {})
    if not isinstance(body, dict) or "user" not in body or "amount" not in body:
        raise InvalidArgument("expected {\"user\": ..., \"amount\": ...}")
    plugin = request.app[PLUGIN]
    user = await plugin.resolve_user(str(body["user"]))
    ev = await plugin.credit(user, str(body["amount"]), by=str(caller.name))
    return web.json_response({"id": ev.id, "user": user, "amount": str(ev.value),
                              "balance": str(rounded(await plugin.service.balance(user)))}, status=201)


async def status(request: web.Request) -> web.Response:
    """GET /status (admins): counters of the event intake."""
    await _admin(request)
    return web.json_response(request.app[PLUGIN].counters())


def make_app(plugin: BillingPlugin) -> web.Application:
    """The /billing/v1 sub-app."""
    app = make_subapp()
    app[PLUGIN] = plugin
    r = app.router
    r.add_get("/balance", balance)
    r.add_get("/user/{id}/balance", aquarium_balance)
    r.add_get("/bills", bill)
    r.add_get("/bills/{month}", bill)
    r.add_get("/usage", usage)
    r.add_get("/events", events)
    r.add_get("/chart", chart)
    r.add_get("/prices", prices)
    r.add_post("/prices", set_price)
    r.add_post("/credits", add_credit)
    r.add_get("/status", status)
    return app
