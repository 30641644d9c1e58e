"""Servers (compute): the create wizard, the list with live state, actions, attached
volumes and the serial console streamed live over a websocket. Calls /compute/v2.0."""

from __future__ import annotations

import asyncio
import codecs
import json
from typing import Any
from urllib.parse import quote

import aiohttp
import aiohttp_jinja2
from aiohttp import web

from archipelago.errors import ArchipelagoError, Forbidden, InvalidArgument, NotFound
from control.ui.app import backend, same_origin
from control.ui.backend import path_of

API = "/compute/v2.0"
#: States in which a server's console may still grow (qemu starting, running, rebooting).
LIVE = ("BUILD", "ACTIVE", "REBOOT")
#: Seconds before the console stream is opened again while the server is LIVE.
CONSOLE_RETRY = 0.5
#: Form action -> compute action body.
ACTIONS: dict[str, dict[str, Any]] = {"start": {"os-start": None}, "stop": {"os-stop": None},
                                      "reboot": {"reboot": {"type": "SOFT"}}}


def add_routes(r: web.UrlDispatcher) -> None:
    """Routes of this module."""
    r.add_get("/servers", servers)
    r.add_get("/servers/table", table)
    r.add_get("/servers/new", wizard)
    r.add_post("/servers", create)
    r.add_get("/servers/{id}", server)
    r.add_get("/servers/{id}/state", state)
    r.add_post("/servers/{id}", action)
    r.add_get("/servers/{id}/console", console_ws)


def _compute(request: web.Request) -> None:
    if not backend(request).has("compute"):
        raise NotFound("compute is not enabled")


async def _list(request: web.Request) -> list[dict[str, Any]]:
    _compute(request)
    doc = await backend(request).json(request, "GET", f"{API}/servers/detail")
    flavors = {f["id"]: f for f in (await backend(request).json(
        request, "GET", f"{API}/flavors/detail"))["flavors"]}
    out = doc["servers"]
    for s in out:
        s["flavor_info"] = flavors.get(s["flavor"]["id"], {})
    return sorted(out, key=lambda s: s["created"], reverse=True)


@aiohttp_jinja2.template("servers.html")
async def servers(request: web.Request) -> dict[str, Any]:
    """GET /ui/servers."""
    return {"servers": await _list(request)}


@aiohttp_jinja2.template("servers_table.html")
async def table(request: web.Request) -> dict[str, Any]:
    """GET /ui/servers/table: the list alone (htmx refreshes it: live state)."""
    return {"servers": await _list(request)}


@aiohttp_jinja2.template("server_new.html")
async def wizard(request: web.Request) -> dict[str, Any]:
    """GET /ui/servers/new: image -> flavor -> extra volumes -> name."""
    from control.ui.pages_images import image_list
    from control.ui.pages_volumes import volume_list

    _compute(request)
    images = [i for i in await image_list(request) if i.get("disk_format") not in ("aki", "ari")]
    flavors = (await backend(request).json(request, "GET", f"{API}/flavors/detail"))["flavors"]
    free = [v for v in await volume_list(request) if not v.get("server") and not v.get("readonly")]
    return {"images": images, "flavors": flavors, "volumes": free}


async def create(request: web.Request) -> web.StreamResponse:
    """POST /ui/servers: the wizard's form."""
    _compute(request)
    form = await request.post()
    body: dict[str, Any] = {"name": str(form.get("name", "")).strip(),
                            "imageRef": str(form.get("image", "")),
                            "flavorRef": str(form.get("flavor", ""))}
    if not body["imageRef"] or not body["flavorRef"]:
        raise InvalidArgument("choose an image and a flavor")
    extra = [str(v) for v in form.getall("volume", [])]
    if extra:
        body["block_device_mapping_v2"] = [
            {"boot_index": 0, "uuid": body["imageRef"], "source_type": "image",
             "destination_type": "volume", "delete_on_termination": True}] + [
            {"boot_index": None, "uuid": v, "source_type": "volume",
             "destination_type": "volume", "delete_on_termination": False} for v in extra]
    doc = await backend(request).json(request, "POST", f"{API}/servers",
                                      data=json.dumps({"server": body}),
                                      headers={"Content-Type": "application/json"})
    raise web.HTTPSeeOther("/ui/servers/" + quote(doc["server"]["id"], safe=""))


@aiohttp_jinja2.template("server.html")
async def server(request: web.Request) -> dict[str, Any]:
    """GET /ui/servers/{id}: state, actions, volumes, console."""
    from control.ui.pages_volumes import volume_list

    _compute(request)
    b, sid = backend(request), request.match_info["id"]
    s = (await b.json(request, "GET", f"{API}/servers/{path_of(sid)}"))["server"]
    att = (await b.json(request, "GET", f"{API}/servers/{path_of(sid)}/os-volume_attachments"))
    free = [v for v in await volume_list(request) if not v.get("server") and not v.get("readonly")]
    return {"s": s, "attachments": att["volumeAttachments"], "free": free}


@aiohttp_jinja2.template("server_state.html")
async def state(request: web.Request) -> dict[str, Any]:
    """GET /ui/servers/{id}/state: the state and its actions alone (htmx refreshes it)."""
    _compute(request)
    sid = request.match_info["id"]
    return {"s": (await backend(request).json(request, "GET", f"{API}/servers/{path_of(sid)}"))["server"]}


async def action(request: web.Request) -> web.StreamResponse:
    """POST /ui/servers/{id}: start, stop, reboot, delete, attach, detach."""
    _compute(request)
    b, sid = backend(request), request.match_info["id"]
    form = await request.post()
    what = str(form.get("action", ""))
    base = f"{API}/servers/{path_of(sid)}"
    jh = {"Content-Type": "application/json"}
    if what in ACTIONS:
        (await b.call(request, "POST", base + "/action", data=json.dumps(ACTIONS[what]),
                      headers=jh)).release()
    elif what == "delete":
        (await b.call(request, "DELETE", base)).release()
        raise web.HTTPSeeOther("/ui/servers")
    elif what == "attach":
        vol = str(form.get("volume", ""))
        await b.json(request, "POST", base + "/os-volume_attachments", headers=jh,
                     data=json.dumps({"volumeAttachment": {"volumeId": vol}}))
    elif what == "detach":
        (await b.call(request, "DELETE", base + "/os-volume_attachments/"
                      + path_of(str(form.get("volume", ""))))).release()
    else:
        raise InvalidArgument(f"unknown action {what!r}")
    raise web.HTTPSeeOther("/ui/servers/" + quote(sid, safe=""))


async def console_ws(request: web.Request) -> web.StreamResponse:
    """GET /ui/servers/{id}/console (websocket): the serial log, then what the guest prints
    (compute's console stream, relayed). Compute ends its stream whenever qemu is not
    running, also before a new server's qemu started or during a reboot: while the server
    is in such a state the stream is opened again from where it stopped."""
    _compute(request)
    b, sid = backend(request), request.match_info["id"]
    if not same_origin(request):
        raise Forbidden("the console is only for pages of this site")  # cross-site websocket
    url = f"{API}/servers/{path_of(sid)}"
    # Ask first: an unknown or foreign server is a 404 page, not an empty socket.
    stream = await b.call(request, "GET", url + "/console/stream")
    ws = web.WebSocketResponse(heartbeat=30)
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = 0
    try:
        await ws.prepare(request)
        while not ws.closed:
            try:
                async for chunk in stream.content.iter_any():
                    offset += len(chunk)
                    text = dec.decode(chunk)
                    if text:
                        await ws.send_str(text)
            finally:
                stream.release()
            status = (await b.json(request, "GET", url))["server"]["status"]
            if status not in LIVE:
                break
            await asyncio.sleep(CONSOLE_RETRY)
            stream = await b.call(request, "GET", url + f"/console/stream?offset={offset}")
    except (ConnectionResetError, aiohttp.ClientError, ArchipelagoError):
        pass
    finally:
        stream.release()
        await ws.close()
    return ws
