"""Volumes (compute's os-volumes): create, snapshot, clone, resize, delete; the
parent/clone tree with sizes."""

from __future__ import annotations

import json
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from archipelago.errors import InvalidArgument, NotFound
from control.ui.app import backend
from control.ui.backend import path_of

API = "/compute/v2.0/os-volumes"
GiB = 1 << 30


def add_routes(r: web.UrlDispatcher) -> None:
    """Routes of this module."""
    r.add_get("/volumes", volumes)
    r.add_post("/volumes", create)
    r.add_post("/volumes/{name}", action)


async def volume_list(request: web.Request) -> list[dict[str, Any]]:
    """The user's volumes (compute's view)."""
    if not backend(request).has("compute"):
        raise NotFound("compute is not enabled")
    return list((await backend(request).json(request, "GET", API))["volumes"])


def tree(vols: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(depth, volume) in parent-before-child order: snapshots and clones under their source."""
    names = {v["name"] for v in vols}
    kids: dict[str | None, list[dict[str, Any]]] = {}
    for v in vols:
        kids.setdefault(v.get("parent") if v.get("parent") in names else None, []).append(v)
    out: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        for v in sorted(kids.get(parent, []), key=lambda x: x["name"]):
            out.append((depth, v))
            if depth < 32:      # maps cannot loop, but a page must end
                walk(v["name"], depth + 1)
    walk(None, 0)
    return out


@aiohttp_jinja2.template("volumes.html")
async def volumes(request: web.Request) -> dict[str, Any]:
    """GET /ui/volumes."""
    return {"tree": tree(await volume_list(request))}


def _gib(text: Any) -> int:
    try:
        g = float(str(text))
    except ValueError:
        raise InvalidArgument("size must be a number of GiB") from None
    if not 0 < g <= 65536:
        raise InvalidArgument("size must be more than 0 and at most 65536 GiB")
    return max(512, int(g * GiB) // 512 * 512)


async def create(request: web.Request) -> web.StreamResponse:
    """POST /ui/volumes (name, size in GiB)."""
    form = await request.post()
    body = {"volume": {"name": str(form.get("name", "")).strip(), "size": _gib(form.get("size"))}}
    await backend(request).json(request, "POST", API, data=json.dumps(body),
                                headers={"Content-Type": "application/json"})
    raise web.HTTPSeeOther("/ui/volumes")


async def action(request: web.Request) -> web.StreamResponse:
    """POST /ui/volumes/{name}: snapshot, clone (name), resize (size GiB), delete."""
    b, name = backend(request), request.match_info["name"]
    form = await request.post()
    what = str(form.get("action", ""))
    url = f"{API}/{path_of(name)}"
    if what == "delete":
        (await b.call(request, "DELETE", url)).release()
    elif what in ("snapshot", "clone", "resize"):
        arg = {"size": _gib(form.get("size"))} if what == "resize" else {
            "name": str(form.get("new", "")).strip()}
        await b.json(request, "POST", url + "/action", data=json.dumps({what: arg}),
                     headers={"Content-Type": "application/json"})
    else:
        raise InvalidArgument(f"unknown action {what!r}")
    raise web.HTTPSeeOther("/ui/volumes")
