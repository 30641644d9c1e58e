"""/compute/v2.0/networks and /compute/v2.0/ports as Cyclades offers them (Neutron shapes).

POST /networks {"network": {"name", "cidr", "type"?, "public"?, "user"?}} -> 201 (Cyclades
takes the subnet in a second call, POST /subnets; here it comes with the network),
DELETE /networks/{id} -> 204 (409 while ports are on it); POST /ports {"port":
{"network_id", "device_id", "SNF:firewall_profile"?}} -> 201 = attach a NIC (hot-plugged
when the server runs), DELETE /ports/{id} -> 204 = detach it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from archipelago.errors import InvalidArgument


async def _body(request: web.Request, key: str) -> dict[str, Any]:
    from control.host.webapi import read_json

    doc = await read_json(request, {})
    if not isinstance(doc, dict) or not isinstance(doc.get(key), dict):
        raise InvalidArgument(f"body must be {{\"{key}\": {{...}}}}")
    return dict(doc[key])


def add_routes(r: web.UrlDispatcher, with_caller: Any) -> None:
    """The network and port routes (handlers get the service and the caller)."""
    r.add_get("/networks", with_caller(networks))
    r.add_post("/networks", with_caller(network_create))
    r.add_get("/networks/{id}", with_caller(network_show))
    r.add_delete("/networks/{id}", with_caller(network_delete))
    r.add_get("/ports", with_caller(ports))
    r.add_post("/ports", with_caller(port_create))
    r.add_get("/ports/{id}", with_caller(port_show))
    r.add_delete("/ports/{id}", with_caller(port_delete))


async def networks(svc: Any, who: Any, request: web.Request) -> web.Response:
    """GET /networks."""
    return web.json_response({"networks": [n.to_api() for n in await svc.net.list(who)]})


async def network_create(svc: Any, who: Any, request: web.Request) -> web.Response:
    """POST /networks -> 201."""
    b = await _body(request, "network")
    kind = b.get("type", "MAC_FILTERED")
    if kind not in ("MAC_FILTERED", "PHYSICAL_VLAN", "CUSTOM", "IP_LESS_ROUTED"):
        raise InvalidArgument(f"network type {kind!r} is unknown")
    public = b.get("public", False)
    if not isinstance(public, bool):
        raise InvalidArgument("network.public must be true or false")
    n = await svc.net.create(who, b.get("name"), b.get("cidr"), public, b.get("user") or None)
    return web.json_response({"network": n.to_api()}, status=201)


async def network_show(svc: Any, who: Any, request: web.Request) -> web.Response:
    """GET /networks/{id}."""
    return web.json_response({"network": (await svc.net.get(who, request.match_info["id"]))
                              .to_api()})


async def network_delete(svc: Any, who: Any, request: web.Request) -> web.Response:
    """DELETE /networks/{id} -> 204."""
    await svc.net.delete(who, request.match_info["id"])
    return web.Response(status=204)


async def ports(svc: Any, who: Any, request: web.Request) -> web.Response:
    """GET /ports[?device_id=SERVER]."""
    got = await svc.net.ports(who, request.query.get("device_id") or None)
    return web.json_response({"ports": [p.to_api() for p in got]})


async def port_create(svc: Any, who: Any, request: web.Request) -> web.Response:
    """POST /ports -> 201: a NIC for a server."""
    b = await _body(request, "port")
    fixed = b.get("fixed_ips") or []
    if not isinstance(fixed, list) or len(fixed) > 1 or not all(
            isinstance(f, dict) and "ip_address" in f for f in fixed):
        raise InvalidArgument("port.fixed_ips: at most one {\"ip_address\": IP}")
    p = await svc.net.port_create(who, b.get("network_id"), b.get("device_id"),
                                  b.get("SNF:firewall_profile", "ENABLED"),
                                  str(fixed[0]["ip_address"]) if fixed else None)
    return web.json_response({"port": p.to_api()}, status=201)


async def port_show(svc: Any, who: Any, request: web.Request) -> web.Response:
    """GET /ports/{id}."""
    return web.json_response({"port": (await svc.net.port(who, request.match_info["id"]))
                              .to_api()})


async def port_delete(svc: Any, who: Any, request: web.Request) -> web.Response:
    """DELETE /ports/{id} -> 204."""
    await svc.net.port_delete(who, request.match_info["id"])
    return web.Response(status=204)
