"""Images (Plankton): own, shared and public ones; register a file as an image."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from archipelago.errors import InvalidArgument
from control.ui.app import backend

DISK_FORMATS = ("diskdump", "raw", "qcow2", "aki", "ari")


def add_routes(r: web.UrlDispatcher) -> None:
    """Routes of this module."""
    r.add_get("/images", images)
    r.add_post("/images", register)


async def image_list(request: web.Request) -> list[dict[str, Any]]:
    """Every image the user may use (own, shared with them, public)."""
    doc = await backend(request).json(request, "GET", "/image/v1.0/images/detail")
    return list((doc or {}).get("images", []))


@aiohttp_jinja2.template("images.html")
async def images(request: web.Request) -> dict[str, Any]:
    """GET /ui/images."""
    me = request["ui_principal"].uuid
    found = await image_list(request)
    return {"own": [i for i in found if i.get("owner") == me],
            "shared": [i for i in found if i.get("owner") != me and not i.get("is_public")],
            "public": [i for i in found if i.get("owner") != me and i.get("is_public")],
            "formats": DISK_FORMATS}


async def register(request: web.Request) -> web.StreamResponse:
    """POST /ui/images: container + object (a file of the user's) become an image."""
    form = await request.post()
    name, cont, obj = (str(form.get(k, "")).strip() for k in ("name", "container", "object"))
    if not name or not cont or not obj:
        raise InvalidArgument("an image needs a name, a container and a file")
    fmt = str(form.get("disk_format", "diskdump"))
    if fmt not in DISK_FORMATS:
        raise InvalidArgument(f"unknown disk format {fmt!r}")
    me = request["ui_principal"].uuid
    # Plankton unquotes X-Image-Meta-* values (a name may hold "%" or any UTF-8 text).
    headers = {"X-Image-Meta-Name": quote(name, safe=" "), "X-Image-Meta-Disk-Format": fmt,
               "X-Image-Meta-Location": f"pithos://{me}/{quote(cont, safe='')}/{quote(obj)}",
               "X-Image-Meta-Is-Public": "true" if form.get("is_public") else "false"}
    for line in str(form.get("properties", "")).splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            continue
        if not key.strip().replace("_", "").replace("-", "").isalnum():
            raise InvalidArgument(f"property name {key.strip()!r}: letters, digits, - and _ only")
        headers[f"X-Image-Meta-Property-{key.strip()}"] = quote(value.strip(), safe=" ")
    await backend(request).json(request, "POST", "/image/v1.0/images", headers=headers)
    raise web.HTTPSeeOther("/ui/images")
