"""Plankton (Glance v1 subset): images are registered Pithos objects, pure metadata.

Image id = the object's UUID, checksum = its Merkle root. ``image_hashmap`` gives
the map a volume is thin-cloned from (no block is copied).

``X-Image-Meta-*`` values are URL-quoted by clients (kamaki, ``archip image upload``), as
Synnefo's Plankton expects: HTTP header values cannot carry non-ASCII text portably, and the
location is a URL. They are unquoted here (a raw UTF-8 value without ``%`` is unchanged).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from archipelago.errors import InvalidArgument, NotFound
from pithos_gw.auth import access
from pithos_gw.common import META, Target, fail, out_value, timed
from pithos_gw.meta import MetaStore

PREFIXES = ("/image/v1.0/images", "/images", "/image/v1.0/shared-images", "/shared-images")
_FIELDS = ("name", "disk_format", "container_format", "is_public", "owner")
_LIST_FIELDS = ("id", "name", "container_format", "disk_format", "size", "status", "checksum")


async def image_hashmap(meta: MetaStore, image_id: str) -> tuple[list[str], int]:
    """(block ids, bytes) of an image: the map of the object version it was registered from."""
    img = await meta.image_get(image_id)
    if img is None:
        raise NotFound(f"image {image_id!r} not found")
    a, c, o = img["_account"], img["_container"], img["_object"]
    v = await meta.object_get(a, c, o, img["version"])
    if v is None or v.hash != img["checksum"]:
        v = await meta.object_get(a, c, o)
    if v is None or v.hash != img["checksum"]:
        raise NotFound(f"the object of image {image_id!r} is gone")
    return v.hashes, v.bytes


async def image_to_volume(meta: MetaStore, mapper: Any, image_id: str, volume: str,
                          size: int | None = None) -> Any:
    """Thin-clone an image into a writable volume via ``mapper.clone_hashmap`` (no data moves).

    ``mapper`` is an archipelago.mapper.Mapper (or its peer proxy) over the blocker
    holding the image's blocks; a size below the image's is InvalidArgument.
    """
    hashes, nbytes = await image_hashmap(meta, image_id)
    if size is not None and size < nbytes:
        raise InvalidArgument(f"volume size {size} is smaller than the image ({nbytes} bytes)")
    return await mapper.clone_hashmap(volume, hashes, nbytes, size=size)


#: Default volume sizes from images are rounded up to this.
SECTOR = 512


def volume_from_image(client: Any, image_id: str, volume: str,
                      size: int | None = None, config: Any = None) -> Any:
    """Blocking: thin-clone image ``image_id`` into ``volume`` through a daemon client
    (an archipelago.client.Client); the image's map comes from the gateway's metadata
    ([database] url of ``config``, else of the instance's file; default DATA_DIR/gateway.db).
    The default size is the image's rounded up to a 512-byte sector (zeros past it)."""
    import asyncio

    from pithos_gw.server import has_meta, meta_url

    if not has_meta(client.instance, config):
        raise NotFound(f"image {image_id!r} not found (no gateway metadata in "
                       f"{client.instance.data_dir}: images are registered through the gateway)")

    async def lookup() -> tuple[list[str], int]:
        meta = MetaStore(meta_url(client.instance, config))
        try:
            return await image_hashmap(meta, image_id)
        finally:
            await meta.close()

    hashes, nbytes = asyncio.run(lookup())
    if size is None:
        # A disk is whole sectors: NBD clients cannot address a partial last sector.
        size = -(-nbytes // SECTOR) * SECTOR
    elif size < nbytes:
        raise InvalidArgument(f"volume size {size} is smaller than image {image_id!r} "
                              f"({nbytes} bytes)")
    return client.clone_hashmap(volume, hashes, nbytes, size=size)


def _public(img: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in img.items() if not k.startswith("_")}


def _headers_meta(request: web.Request) -> tuple[dict[str, Any], dict[str, str]]:
    """Fields and properties of the X-Image-Meta-* headers, their values unquoted (400 when
    a quoted value is not UTF-8)."""
    fields: dict[str, Any] = {}
    props: dict[str, str] = {}
    for k, v in request.headers.items():
        lk = k.lower()
        if not lk.startswith("x-image-meta-"):
            continue
        try:
            value = unquote(v, errors="strict")
        except UnicodeDecodeError:
            fail(400, f"{k}: a quoted value must be UTF-8")
        if lk.startswith("x-image-meta-property-"):
            props[lk[len("x-image-meta-property-"):]] = value
        else:
            fields[lk[len("x-image-meta-"):].replace("-", "_")] = value
    return fields, props


def _bool(v: str) -> bool:
    return v.strip().lower() in ("true", "1", "yes")


def _owns(img: dict[str, Any], user: str) -> bool:
    """The image's owner is the owner of its object: a row's ``owner`` field never grants
    rights by itself (rows replaced by a read-sharee before registration was owner-only)."""
    return bool(img["_account"] == user)


async def _visible(request: web.Request, user: str, img: dict[str, Any]) -> bool:
    if _owns(img, user) or img["is_public"]:
        return True
    t = Target(img["_account"], img["_container"], img["_object"], user)
    return await access(request, t) is not None


async def handle(request: web.Request, user: str, parts: list[str]) -> web.StreamResponse:
    """Dispatch /images[/detail|/<id>[/members[/<m>]]] and /shared-images/<m>."""
    m = request.method
    if "shared-images" in request.rel_url.raw_path:
        if m != "GET" or len(parts) != 1:
            fail(405, "Not supported")
        return await shared_images(request, user, parts[0])
    if not parts:
        if m == "POST":
            return await register(request, user)
        if m == "GET":
            return await list_images(request, user, detail=False)
    elif parts == ["detail"] and m == "GET":
        return await list_images(request, user, detail=True)
    elif len(parts) >= 2 and parts[1] == "members":
        return await members(request, user, parts[0], parts[2:])
    elif len(parts) == 1:
        meta = request.app[META]
        img = await meta.image_get(parts[0])
        if img is None or not await _visible(request, user, img):
            fail(404, "Image not found")
        if m in ("HEAD", "GET"):
            headers = {f"X-Image-Meta-{k.replace('_', '-').title()}": out_value(str(v))
                       for k, v in _public(img).items() if k != "properties"}
            for k, v in img["properties"].items():
                headers[f"X-Image-Meta-Property-{k}"] = out_value(str(v))
            if m == "HEAD":
                return web.Response(status=200, headers=headers)
            return _json({"image": _public(img)}, headers=headers)
        if not _owns(img, user):
            fail(403, "Forbidden")
        if m == "DELETE":
            await meta.image_delete(img["id"])
            return web.Response(status=204)
        if m == "PUT":
            return await update(request, img)
    fail(405 if len(parts) <= 1 else 404, "Not supported")


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc).encode(), headers=headers,
                        content_type="application/json")


async def register(request: web.Request, user: str) -> web.Response:
    """POST /images: register pithos://account/container/object as an image (no data moves)."""
    fields, props = _headers_meta(request)
    if "id" in fields:
        fail(400, "Image id cannot be chosen")
    name = fields.get("name")
    loc = fields.get("location", "")
    if not name:
        fail(400, "X-Image-Meta-Name required")
    if not loc.startswith("pithos://"):
        fail(400, "X-Image-Meta-Location must be pithos://<account>/<container>/<object>")
    acct, _, rest = loc[len("pithos://"):].partition("/")
    cont, _, obj = rest.partition("/")
    if not acct or not cont or not obj:
        fail(400, "Bad image location")
    meta = request.app[META]
    t = Target(acct, cont, obj, user)
    v = await meta.object_get(acct, cont, obj)
    if v is None or await access(request, t) is None:
        fail(400, "Image location is not a readable object")
    if not t.owner:
        # Registering sets the object's read sharing (members): only its owner may.
        fail(403, "Only the object's owner may register it as an image")
    size = fields.get("size")
    if size is not None and (not (size.isascii() and size.isdigit()) or int(size) != v.bytes):
        fail(400, "Image size does not match the object")
    if "checksum" in fields and fields["checksum"].lower() != v.hash:
        fail(400, "Image checksum must be the object's Merkle root")
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    img = {"id": v.uuid, "name": name, "location": loc, "size": v.bytes, "checksum": v.hash,
           "disk_format": fields.get("disk_format", "diskdump"),
           "container_format": fields.get("container_format", "bare"),
           "is_public": _bool(fields.get("is_public", "false")), "owner": user,
           "status": "available", "created_at": now, "updated_at": now, "deleted_at": "",
           "mapfile": v.hash, "version": v.serial, "is_snapshot": False, "store": "pithos",
           "properties": props, "_account": acct, "_container": cont, "_object": obj}
    await meta.image_put(v.uuid, user, img, guard=True)
    return _json({"image": _public(img)})


async def update(request: web.Request, img: dict[str, Any]) -> web.Response:
    """PUT /images/<id>: change name, formats, visibility, properties."""
    fields, props = _headers_meta(request)
    for k in _FIELDS:
        if k in fields and k != "owner":
            img[k] = _bool(fields[k]) if k == "is_public" else fields[k]
    purge = _bool(request.headers.get("X-Glance-Registry-Purge-Props", "false"))
    img["properties"] = props if purge else {**img["properties"], **props}
    img["updated_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    img["owner"] = img["_account"]  # repairs a row a read-sharee took over before the fix
    await request.app[META].image_put(img["id"], img["owner"], img)
    return _json({"image": _public(img)})


async def list_images(request: web.Request, user: str, detail: bool) -> web.Response:
    """GET /images[/detail] with Glance v1 filters and sorting."""
    q = request.query
    out = []
    for img in await request.app[META].image_list():
        if not await _visible(request, user, img):
            continue
        if any(k in q and str(img.get(k)) != q[k]
               for k in ("name", "container_format", "disk_format", "status")):
            continue
        try:
            if "size_min" in q and img["size"] < int(q["size_min"]):
                continue
            if "size_max" in q and img["size"] > int(q["size_max"]):
                continue
        except ValueError:
            fail(400, "Bad size filter")
        out.append(_public(img) if detail else {k: img[k] for k in _LIST_FIELDS})
    key = q.get("sort_key", "created_at")
    if out and key not in out[0]:
        key = "id"
    out.sort(key=lambda i: (str(i.get(key)), i["id"]), reverse=q.get("sort_dir", "desc") == "desc")
    return _json({"images": out})


async def members(request: web.Request, user: str, image_id: str,
                  rest: list[str]) -> web.Response:
    """Image members are the read-sharing of the image's object."""
    meta = request.app[META]
    img = await meta.image_get(image_id)
    if img is None or not await _visible(request, user, img):
        fail(404, "Image not found")
    where = (img["_account"], img["_container"], img["_object"])
    read, write = await meta.sharing_get(*where)
    m = request.method
    if m == "GET" and not rest:
        return _json({"members": [{"member_id": r, "can_share": False} for r in read]})
    if not _owns(img, user):
        fail(403, "Forbidden")
    if m == "PUT" and not rest:
        try:
            doc = await timed(request, request.json())
            read = sorted({str(x["member_id"]) for x in doc["memberships"]})
        except (ValueError, KeyError, TypeError, RecursionError):
            fail(400, "Bad memberships document")
    elif m == "PUT" and len(rest) == 1:
        read = sorted(set(read) | {rest[0]})
    elif m == "DELETE" and len(rest) == 1:
        if rest[0] not in read:
            fail(404, "Not a member")
        read = [r for r in read if r != rest[0]]
    else:
        fail(405, "Not supported")
    await meta.sharing_set(*where, read, write)
    return web.Response(status=204)


async def shared_images(request: web.Request, user: str, member: str) -> web.Response:
    """GET /shared-images/<member>: images of the caller shared with ``member``."""
    meta = request.app[META]
    out = []
    for img in await meta.image_list():
        if not _owns(img, user):
            continue
        read, _ = await meta.sharing_get(img["_account"], img["_container"], img["_object"])
        if member in read:
            out.append({"image_id": img["id"], "can_share": False})
    return _json({"shared_images": out})
