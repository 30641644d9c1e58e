"""/account/v1.0: user catalogs, quotas, resources and commissions (Astakos).

User tokens reach user_catalogs and quotas; the service_* calls and commissions need an
admin's token (Astakos' component tokens).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from archipelago.errors import Forbidden, InvalidArgument
from control.host.webapi import make_subapp, read_json
from control.identity.quotas import parse_provision
from control.identity.service import IdentityService
from control.identity.users import Principal

#: Longest list a catalog or bulk request may carry.
MAX_ITEMS = 1000


def _str_list(value: Any, what: str, allow_null: bool = False) -> list[str] | None:
    if value is None:
        return None if allow_null else []
    if not isinstance(value, list) or len(value) > MAX_ITEMS or not all(
            isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what} is a list of at most {MAX_ITEMS} strings")
    return value


def _serials(value: Any, what: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidArgument(f"{what} is a list of at most {MAX_ITEMS} serials")
    return value


def routes(service: IdentityService) -> web.Application:
    """The /account/v1.0 sub-app."""
    app = make_subapp()

    async def admin(request: web.Request) -> Principal:
        p = await service.principal(request)
        if not p.is_admin:
            raise Forbidden("Forbidden: this call needs an admin (component) token")
        return p

    async def catalogs(request: web.Request, allow_null: bool) -> web.Response:
        body = await read_json(request, {})
        if not isinstance(body, dict):
            raise InvalidArgument("expected {\"uuids\": [...], \"displaynames\": [...]}")
        uuids = _str_list(body.get("uuids"), "uuids", allow_null)
        names = _str_list(body.get("displaynames"), "displaynames", allow_null)
        return web.json_response(await service.catalogs(uuids, names))

    async def user_catalogs(request: web.Request) -> web.Response:
        await service.principal(request)
        return await catalogs(request, allow_null=False)

    async def service_user_catalogs(request: web.Request) -> web.Response:
        await admin(request)
        return await catalogs(request, allow_null=True)

    async def quotas(request: web.Request) -> web.Response:
        p = await service.principal(request)
        return web.json_response(await service.user_quotas(p.uuid))

    async def service_quotas(request: web.Request) -> web.Response:
        await admin(request)
        return web.json_response(await service.service_quotas(request.query.get("user")))

    async def resources(request: web.Request) -> web.Response:
        return web.json_response({r.name: {
            "unit": r.unit, "description": r.description, "service_type": r.service,
            "service_origin": r.service, "default_limit": r.default_limit,
            "ui_visible": True, "api_visible": True, "allow_in_projects": True}
            for r in (await service.resources()).values()})

    async def issue(request: web.Request) -> web.Response:
        await admin(request)
        body = await read_json(request, None)
        if not isinstance(body, dict) or not isinstance(body.get("provisions"), list):
            raise InvalidArgument("expected {\"provisions\": [...], ...}")
        if len(body["provisions"]) > MAX_ITEMS:
            raise InvalidArgument(f"at most {MAX_ITEMS} provisions")
        provs = [parse_provision(p) for p in body["provisions"]]
        force, auto = body.get("force", False), body.get("auto_accept", False)
        name = body.get("name", "")
        if not isinstance(force, bool) or not isinstance(auto, bool) \
                or not isinstance(name, str):
            raise InvalidArgument("force and auto_accept are booleans, name a string")
        serial = await service.issue_commission(provs, name, force=force, auto_accept=auto)
        return web.json_response({"serial": serial}, status=201)

    async def pending(request: web.Request) -> web.Response:
        await admin(request)
        return web.json_response(await service.pending())

    def serial_of(request: web.Request) -> int:
        raw = request.match_info["serial"]
        if not raw.isdigit() or len(raw) > 18:
            raise InvalidArgument("bad serial")
        return int(raw)

    async def get_one(request: web.Request) -> web.Response:
        await admin(request)
        return web.json_response(await service.commission(serial_of(request)))

    async def action(request: web.Request) -> web.Response:
        await admin(request)
        serial = serial_of(request)
        body = await read_json(request, None)
        if not isinstance(body, dict) or len(body) != 1 or next(iter(body)) not in (
                "accept", "reject"):
            raise InvalidArgument("expected {\"accept\": \"\"} or {\"reject\": \"\"}")
        if "accept" in body:
            await service.accept(serial)
        else:
            await service.reject(serial)
        return web.Response(status=200)

    async def bulk(request: web.Request) -> web.Response:
        await admin(request)
        body = await read_json(request, None)
        if not isinstance(body, dict) or not set(body) <= {"accept", "reject"}:
            raise InvalidArgument("expected {\"accept\": [...], \"reject\": [...]}")
        acc, rej = _serials(body.get("accept"), "accept"), _serials(body.get("reject"), "reject")
        return web.json_response(await service.resolve(acc, rej))

    r = app.router
    r.add_post("/user_catalogs", user_catalogs)
    r.add_post("/service/user_catalogs", service_user_catalogs)
    r.add_get("/quotas", quotas)
    r.add_get("/service_quotas", service_quotas)
    r.add_get("/resources", resources)
    r.add_post("/commissions", issue)
    r.add_get("/commissions", pending)
    r.add_post("/commissions/action", bulk)
    r.add_get("/commissions/{serial}", get_one)
    r.add_post("/commissions/{serial}/action", action)
    return app
