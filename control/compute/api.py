"""The OpenStack Compute v2 subset Cyclades offers, under /compute/v2.0.

servers (list, detail, create -> 202, show, delete -> 204), servers/{id}/action (os-start,
os-stop, reboot, resize, os-getConsoleOutput, createImage = snapshot of the boot volume),
servers/{id}/os-volume_attachments, flavors (admins may POST), and the console: GET
servers/{id}/console (text; ?offset=N) and servers/{id}/console/stream (chunked, follows
the serial log while the server runs: what the web UI shows). Faults are OpenStack JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from archipelago.errors import Forbidden, InvalidArgument
from control.compute import actions
from control.compute.disks import CreateRequest
from control.compute.service import ComputeService

SERVICE = web.AppKey("compute_service", ComputeService)
PRINCIPAL = "compute_principal"
#: Seconds between looks at a console log for new bytes while streaming it.
FOLLOW_EVERY = 0.25


def _auth(identity: Any) -> Any:
    @web.middleware
    async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
        request[PRINCIPAL] = await identity().principal(request)
        return await handler(request)
    return mw


def make_app(svc: ComputeService) -> web.Application:
    """The /compute/v2.0 sub-app over ``svc``."""
    from control.host.webapi import faults

    app = web.Application(middlewares=[faults, _auth(lambda: svc.ctx.service("identity"))],
                          client_max_size=1 << 20)
    app[SERVICE] = svc
    r = app.router
    r.add_get("/servers", list_servers)
    r.add_get("/servers/detail", list_detail)
    r.add_post("/servers", create)
    r.add_get("/servers/{id}", show)
    r.add_delete("/servers/{id}", delete)
    r.add_post("/servers/{id}/action", action)
    r.add_get("/servers/{id}/console", console)
    r.add_get("/servers/{id}/console/stream", console_stream)
    r.add_get("/servers/{id}/os-volume_attachments", attachments)
    r.add_post("/servers/{id}/os-volume_attachments", attach)
    r.add_delete("/servers/{id}/os-volume_attachments/{vol}", detach)
    r.add_get("/flavors", flavors)
    r.add_get("/flavors/detail", flavors)
    r.add_post("/flavors", flavor_create)
    r.add_get("/flavors/{id}", flavor_show)
    from control.compute import volumes

    volumes.add_routes(r, _with_caller)
    from control.compute.network import api as net_api

    net_api.add_routes(r, _with_caller)
    return app


def _with_caller(fn: Any) -> Any:
    """A handler ``fn(svc, principal, request)`` as an aiohttp handler."""
    async def handler(request: web.Request) -> web.StreamResponse:
        return await fn(request.app[SERVICE], request[PRINCIPAL], request)
    return handler


def _svc(request: web.Request) -> tuple[ComputeService, Any]:
    return request.app[SERVICE], request[PRINCIPAL]


async def _body(request: web.Request, key: str) -> dict[str, Any]:
    from control.host.webapi import read_json

    doc = await read_json(request, {})
    if not isinstance(doc, dict) or not isinstance(doc.get(key, {}), dict):
        raise InvalidArgument(f"body must be {{\"{key}\": {{...}}}}")
    return dict(doc.get(key) or {})


async def list_servers(request: web.Request) -> web.Response:
    """GET /servers."""
    svc, who = _svc(request)
    servers = await svc.list(who, request.query.get("all_tenants") in ("1", "true"))
    return web.json_response({"servers": [s.to_api(detail=False) for s in servers]})


async def list_detail(request: web.Request) -> web.Response:
    """GET /servers/detail."""
    svc, who = _svc(request)
    servers = await svc.list(who, request.query.get("all_tenants") in ("1", "true"))
    nics = await svc.net.addresses([s.id for s in servers])
    return web.json_response({"servers": [{**s.to_api(), **nics.get(s.id, {})} for s in servers]})


async def create(request: web.Request) -> web.Response:
    """POST /servers -> 202 (BUILD); 413 over quota before anything is made."""
    svc, who = _svc(request)
    b = await _body(request, "server")
    size = b.get("volume_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise InvalidArgument("volume_size must be a positive number of bytes")
    req = CreateRequest(name=b.get("name"), flavor=b.get("flavorRef"), image=b.get("imageRef") or None,
                        snapshot=b.get("snapshotRef") or None, volume=b.get("volumeRef") or None,
                        bdm=b.get("block_device_mapping_v2") or [], volume_size=size,
                        kernel_args=str(b.get("kernel_args", "")), user=b.get("user") or None,
                        networks=_networks(b.get("networks")))
    if req.flavor is None:
        raise InvalidArgument("flavorRef required")
    s = await svc.create(who, req)
    return web.json_response({"server": s.to_api()}, status=202)


def _networks(value: Any) -> list[Any]:
    """server.networks: [{"uuid": NET, "fixed_ip"?: IP}, ...] (OpenStack) or [NET, ...]."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument("server.networks must be a list")
    out: list[Any] = []
    for v in value:
        ref = v.get("uuid") if isinstance(v, dict) else v
        if not isinstance(ref, (str, int)) or isinstance(ref, bool) or str(ref) == "":
            raise InvalidArgument(f"server.networks: {v!r} names no network")
        ip = v.get("fixed_ip") if isinstance(v, dict) else None
        out.append({"uuid": str(ref), "fixed_ip": None if ip is None else str(ip)})
    return out


async def show(request: web.Request) -> web.Response:
    """GET /servers/{id}."""
    svc, who = _svc(request)
    s = await svc.get(who, request.match_info["id"])
    nics = await svc.net.addresses([s.id])
    return web.json_response({"server": {**s.to_api(), **nics.get(s.id, {})}})


async def delete(request: web.Request) -> web.Response:
    """DELETE /servers/{id} -> 204."""
    svc, who = _svc(request)
    await svc.delete(who, request.match_info["id"])
    return web.Response(status=204)


async def action(request: web.Request) -> web.StreamResponse:
    """POST /servers/{id}/action with one of the supported actions."""
    from control.host.webapi import read_json

    svc, who = _svc(request)
    sid = request.match_info["id"]
    doc = await read_json(request, {})
    if not isinstance(doc, dict) or len(doc) != 1:
        raise InvalidArgument("an action body has exactly one key")
    (name, arg), = doc.items()
    arg = arg if isinstance(arg, dict) else {}
    if name == "os-start":
        await svc.start(who, sid)
    elif name == "os-stop":
        await svc.stop(who, sid)
    elif name == "reboot":
        kind = str(arg.get("type", "SOFT")).upper()
        if kind not in ("SOFT", "HARD"):
            raise InvalidArgument("reboot type must be SOFT or HARD")
        await svc.reboot(who, sid, hard=kind == "HARD")
    elif name == "resize":
        if "flavorRef" not in arg:
            raise InvalidArgument("resize needs flavorRef")
        await actions.resize(svc, who, sid, arg["flavorRef"])
    elif name == "createImage":
        snap = await actions.snapshot(svc, who, sid, str(arg.get("name", "")),
                                      arg.get("volume") or None)
        return web.json_response({"snapshot": snap}, status=202)
    elif name == "firewallProfile":
        await svc.net.set_firewall(who, sid, arg.get("nic"), arg.get("profile"))
    elif name == "os-getConsoleOutput":
        length = arg.get("length")
        n = int(length) * 200 if isinstance(length, int) and length > 0 else None
        data, _ = await actions.console(svc, who, sid, length=n)
        text = data.decode(errors="replace")
        if isinstance(length, int) and length > 0:
            text = "\n".join(text.splitlines()[-length:])
        return web.json_response({"output": text})
    else:
        raise InvalidArgument(f"unknown action {name!r}")
    return web.Response(status=202)


async def console(request: web.Request) -> web.Response:
    """GET /servers/{id}/console[?offset=N]: serial log bytes; X-Console-Size = log size."""
    svc, who = _svc(request)
    off = request.query.get("offset")
    if off is not None and not off.isdigit():
        raise InvalidArgument("offset must be a number")
    data, size = await actions.console(svc, who, request.match_info["id"],
                                       offset=int(off) if off is not None else None)
    return web.Response(body=data, content_type="text/plain", charset="utf-8",
                        headers={"X-Console-Size": str(size)})


async def console_stream(request: web.Request) -> web.StreamResponse:
    """GET /servers/{id}/console/stream[?offset=N]: the log, then new bytes as they come,
    until the server stops running (or the client goes)."""
    svc, who = _svc(request)
    sid = request.match_info["id"]
    off = request.query.get("offset", "0")
    if not off.isdigit():
        raise InvalidArgument("offset must be a number")
    offset = int(off)
    await svc.get(who, sid)
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    while True:
        data, size = await actions.console(svc, who, sid, offset=offset)
        if data:
            await resp.write(data)
            offset += len(data)
            continue
        if not svc.runtime.running(sid) and offset >= size:
            break
        await asyncio.sleep(FOLLOW_EVERY)
    await resp.write_eof()
    return resp


async def attachments(request: web.Request) -> web.Response:
    """GET /servers/{id}/os-volume_attachments."""
    svc, who = _svc(request)
    s = await svc.get(who, request.match_info["id"])
    return web.json_response({"volumeAttachments": [d.to_api(s.id) for d in s.disks]})


async def attach(request: web.Request) -> web.Response:
    """POST /servers/{id}/os-volume_attachments {"volumeAttachment": {"volumeId": V}}."""
    svc, who = _svc(request)
    b = await _body(request, "volumeAttachment")
    vol = b.get("volumeId")
    if not isinstance(vol, str) or not vol:
        raise InvalidArgument("volumeAttachment.volumeId required")
    sid = request.match_info["id"]
    d = await actions.attach(svc, who, sid, vol)
    return web.json_response({"volumeAttachment": d.to_api(sid)})


async def detach(request: web.Request) -> web.Response:
    """DELETE /servers/{id}/os-volume_attachments/{vol} -> 202."""
    svc, who = _svc(request)
    await actions.detach(svc, who, request.match_info["id"], request.match_info["vol"])
    return web.Response(status=202)


async def flavors(request: web.Request) -> web.Response:
    """GET /flavors[/detail]."""
    svc, _ = _svc(request)
    detail = request.path.endswith("/detail")
    return web.json_response({"flavors": [
        f.to_api() if detail else {"id": str(f.id), "name": f.name, "links": []}
        for f in await svc.flavors()]})


async def flavor_show(request: web.Request) -> web.Response:
    """GET /flavors/{id}."""
    svc, _ = _svc(request)
    try:
        f = await svc.flavor(request.match_info["id"])
    except InvalidArgument as e:
        from archipelago.errors import NotFound

        raise NotFound(e.message) from None
    return web.json_response({"flavor": f.to_api()})


async def flavor_create(request: web.Request) -> web.Response:
    """POST /flavors (administrators): {"flavor": {"name", "vcpus", "ram", "disk"}}."""
    svc, who = _svc(request)
    if not who.is_admin:
        raise Forbidden("only an administrator creates flavors")
    b = await _body(request, "flavor")
    f = await svc.flavor_create(b.get("name"), b.get("vcpus"), b.get("ram"), b.get("disk", 0))
    return web.json_response({"flavor": f.to_api()})
