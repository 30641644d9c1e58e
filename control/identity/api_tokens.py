"""/identity/v2.0: Keystone v2 tokens (Astakos' subset).

POST /tokens with passwordCredentials (name or uuid + password; Astakos' uuid + token form
too), with a token, or via a trusted front proxy; an empty body returns the catalog only.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from archipelago.errors import InvalidArgument, NotFound, Unauthorized
from control.host.webapi import base_url, make_subapp, read_json
from control.identity.quotas import iso
from control.identity.service import IdentityService
from control.identity.users import Principal


def access_doc(p: Principal, token: str, expires: float, tenant: str,
               catalog: list[dict[str, Any]]) -> dict[str, Any]:
    """The 200 body of POST /tokens."""
    roles = [{"id": "1", "name": "default"}] + ([{"id": "2", "name": "admin"}]
                                                if p.is_admin else [])
    return {"access": {
        "token": {"id": token, "expires": iso(expires),
                  "tenant": {"id": tenant, "name": p.name}},
        "user": {"id": p.uuid, "name": p.name, "roles": roles, "roles_links": [],
                 "projects": list(p.projects)},
        "serviceCatalog": catalog}}


def routes(service: IdentityService) -> web.Application:
    """The /identity/v2.0 sub-app."""
    app = make_subapp()

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": {
            "id": "v2.0", "status": "stable", "updated": "2014-04-17T00:00:00Z",
            "links": [{"rel": "self", "href": base_url(request) + "/identity/v2.0/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.identity-v2.0+json"}]}})

    async def tokens(request: web.Request) -> web.Response:
        body = await read_json(request, None)
        catalog = service.ctx.catalog
        if body is None or body == {}:
            return web.json_response({"access": {"serviceCatalog": catalog(
                base_url(request), None)}})
        if not isinstance(body, dict) or not isinstance(body.get("auth"), dict):
            raise InvalidArgument("expected {\"auth\": {...}}")
        auth: dict[str, Any] = body["auth"]
        tenant = auth.get("tenantName", auth.get("tenantId"))
        if tenant is not None and not isinstance(tenant, str):
            raise InvalidArgument("tenantName is a string")
        if "token" in auth:
            tok = auth["token"]
            if not isinstance(tok, dict) or not isinstance(tok.get("id"), str):
                raise InvalidArgument("auth.token needs an id")
            token = tok["id"]
            p, expires = await service.token_info(token)
        elif "passwordCredentials" in auth:
            token, p, expires = await _password(service, request, auth)
        else:
            user = await service.proxy.login(request, auth)
            if user is None:
                raise InvalidArgument("no credentials: passwordCredentials or token")
            token, expires = await service.login_token(user.uuid, "login")
            p = await service.authenticate(token)
        project = p.uuid
        if tenant:
            if tenant not in p.projects and tenant != p.name:
                raise InvalidArgument(f"tenantName {tenant!r} does not match the user's projects")
            project = tenant if tenant in p.projects else p.uuid
        return web.json_response(access_doc(p, token, expires, project,
                                            catalog(base_url(request), p.uuid)))

    async def get_token(request: web.Request) -> web.Response:
        raise NotFound("token validation by GET is not offered (POST /tokens with the token)")

    app.router.add_get("", version)
    app.router.add_get("/", version)
    app.router.add_post("/tokens", tokens)
    app.router.add_get("/tokens/{token}", get_token)
    return app


async def _password(service: IdentityService, request: web.Request,
                    auth: dict[str, Any]) -> tuple[str, Principal, float]:
    pc = auth["passwordCredentials"]
    if isinstance(pc, dict) and isinstance(pc.get("password"), str) \
            and isinstance(pc.get("username"), str):
        # Astakos clients send username=<uuid>, password=<token>.
        try:
            p, expires = await service.token_info(pc["password"])
            if pc["username"] in (p.uuid, p.name):
                return pc["password"], p, expires
        except Unauthorized:
            pass
    user = await service.local.login(request, auth)
    assert user is not None
    token, expires = await service.login_token(user.uuid, "login")
    return token, await service.authenticate(token), expires
