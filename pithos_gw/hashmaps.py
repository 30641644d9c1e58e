"""Pithos extensions: GET/PUT ?hashmap (409 missing-blocks loop), raw block upload, partial updates."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from xml.sax.saxutils import quoteattr

from aiohttp import web

from archipelago.errors import InvalidArgument
from archipelago.hashing import ZERO_HASH
from pithos_gw.common import (
    BLOCKS,
    CONFIG,
    META,
    Target,
    etag_of,
    fail,
    request_body,
    want_format,
    while_connected,
)
from pithos_gw.meta import ObjectVersion
from pithos_gw.meta_objects import ANY
from pithos_gw.store import check_hash, nblocks

#: Largest hashmap body accepted (a 1 TiB object's map is ~17 MiB of JSON).
MAX_HASHMAP_BODY = 64 * 1024 * 1024
#: Bytes one hash may take in a hashmap body (quotes, comma, indentation).
_HASH_JSON = 80
_RANGE_RE = re.compile(r"^bytes\s+(?:(\d+)-(\d*)|\*)/(\*|\d+)$")


async def get_hashmap(request: web.Request, v: ObjectVersion,
                      headers: dict[str, str]) -> web.Response:
    """GET ?hashmap: block size, hash algorithm, bytes and ids (JSON, or XML on request)."""
    bs = request.app[BLOCKS].block_size
    headers = {k: val for k, val in headers.items() if k not in ("Content-Type", "Accept-Ranges")}
    if want_format(request, "json") == "xml":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<object name={quoteattr(v.name)} '
                f'bytes="{v.bytes}" block_size="{bs}" block_hash="sha256">'
                + "".join(f"<hash>{h}</hash>" for h in v.hashes) + "</object>")
        return web.Response(body=body.encode(), headers=headers, content_type="application/xml")
    doc = {"block_size": bs, "block_hash": "sha256", "bytes": v.bytes, "hashes": v.hashes}
    return web.Response(body=json.dumps(doc).encode(), headers=headers,
                        content_type="application/json")


def parse_hashmap(body: bytes | bytearray, block_size: int,
                  max_size: int = 1 << 40) -> tuple[list[str], int]:
    """Validate a hashmap document: (hashes, bytes); InvalidArgument -> 400, an object
    above ``max_size`` (or more hashes than it needs) -> 413."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidArgument("hashmap body is not JSON (or nested too deeply)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hashes"), list):
        raise InvalidArgument("hashmap needs a 'hashes' list")
    size = doc.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument("hashmap needs a non-negative integer 'bytes'")
    if size > max_size or len(doc["hashes"]) > nblocks(max_size, block_size):
        fail(413, f"Request Entity Too Large: objects are at most {max_size} bytes")
    if doc.get("block_size", block_size) != block_size:
        raise InvalidArgument(f"block_size must be {block_size}")
    if doc.get("block_hash", "sha256") != "sha256":
        raise InvalidArgument("block_hash must be sha256")
    hashes = [check_hash(h) for h in doc["hashes"]]
    if size == 0 and not hashes:
        hashes = [ZERO_HASH]  # kamaki's empty file; GET ?hashmap answers the zero block
    if len(hashes) != nblocks(size, block_size):
        raise InvalidArgument("number of hashes does not match bytes")
    if size == 0 and hashes != [ZERO_HASH]:
        raise InvalidArgument("a 0-byte hashmap is exactly [sha256('')]")
    return hashes, size


async def _checksum(request: web.Request, hashes: list[str], size: int, root: str) -> str:
    """MD5 for a map-assembled object: reused from an equal object, else read from blocks;
    "" (the Merkle root answers as ETag, as in Pithos+) above ``assembled_md5_limit``:
    MD5 cannot skip zeros, so a tiny request could otherwise hash up to 1 TiB."""
    cfg = request.app[CONFIG]
    if cfg.etag == "merkle":
        return ""
    known = await request.app[META].checksum_for(root, size)
    if known:
        return known
    if size > cfg.assembled_md5_limit:
        return ""
    store = request.app[BLOCKS]
    md5 = hashlib.md5()
    async for data in while_connected(request, store.read_range(hashes, size, 0, size)):
        await asyncio.to_thread(md5.update, data)
    return md5.hexdigest()


async def put_hashmap(request: web.Request, t: Target) -> web.Response:
    """PUT ?hashmap: 409 with the missing ids, or 201 once every block is stored."""
    from archipelago.hashing import merkle_root
    from pithos_gw import objects, reads

    if "Content-Type" not in request.headers:
        fail(411, "Content-Type required")
    store = request.app[BLOCKS]
    max_size = request.app[CONFIG].max_file_size
    limit = min(MAX_HASHMAP_BODY, nblocks(max_size, store.block_size) * _HASH_JSON + 65536)
    clen = request.content_length
    if clen is not None and clen > limit:
        fail(413, "Hashmap too large")
    body = bytearray()
    async for chunk in request_body(request):
        body += chunk
        if len(body) > limit:
            fail(413, "Hashmap too large")
    hashes, size = parse_hashmap(body, store.block_size, max_size)
    old = await objects.current(request, t)
    reads.check_conditions(request, old)
    await objects._container_ok(request, t.account, t.container,
                                size - (old.bytes if old else 0))
    missing = await store.missing(hashes)
    if request.app[CONFIG].hashmap_scope != "global":
        # Unreferenced blocks count as missing: the client proves it has them by upload.
        unknown = set(await request.app[META].refs_unknown(t.user, hashes))
        if unknown:
            either = unknown.union(missing)
            missing = [h for h in dict.fromkeys(hashes) if h in either]
    if missing:
        return web.Response(status=409, body=json.dumps(missing, separators=(",", ":")).encode(),
                            content_type="application/json")
    root = merkle_root(hashes)
    md5 = await _checksum(request, hashes, size, root)
    sent = request.headers.get("ETag")
    if sent and sent.strip('"').lower() not in {md5, root} - {""}:
        fail(422, "Unprocessable Entity: ETag does not match the data")
    meta = objects.read_meta(request, "X-Object-Meta-", objects._EXTRA)
    ctype = request.headers.get("Content-Type", "")
    if ctype.startswith(("application/json", "application/octet-stream", "text/xml")):
        ctype = request.headers.get("X-Object-Content-Type") or ""
    v = await objects._record(request, t, hashes, size, md5, meta, objects._sharing(request),
                              ctype=ctype or None, expect=reads.expect_of(request, old))
    return web.Response(status=201, headers=objects.reply_headers(request, v))


async def upload_blocks(request: web.Request, t: Target) -> web.Response:
    """POST raw data to a container: stored as 4 MiB blocks, reply = their ids."""
    got = await request.app[BLOCKS].ingest(request_body(request),
                                           limit=request.app[CONFIG].max_file_size)
    await request.app[BLOCKS].barrier()  # the client may reference them right away
    await request.app[META].refs_add(t.user, got.hashes)
    return web.Response(status=202, body=json.dumps(got.hashes).encode(),
                        content_type="application/json")


def _content_range(value: str, size: int) -> tuple[int, int | None]:
    """(offset, length or None) of a partial update's Content-Range."""
    m = _RANGE_RE.match(value.strip())
    if not m:
        fail(416, "Bad Content-Range")
    first, last, total = m.groups()
    if total != "*" and int(total) != size:
        fail(416, "Content-Range instance length differs from the object size")
    if first is None:
        return size, None
    a = int(first)
    if a > size:
        fail(416, "Content-Range starts beyond the object")
    if last:
        b = int(last)
        if b < a:
            fail(416, "Bad Content-Range")
        return a, b - a + 1
    return a, None


#: Per-object lock and how many requests use it (dropped when the last one leaves).
_UPDATE_LOCKS: dict[tuple[str, str, str], tuple[asyncio.Lock, list[int]]] = {}


async def partial_update(request: web.Request, t: Target) -> web.Response:
    """POST with Content-Range / X-Source-Object / X-Object-Bytes: rewrite part of the map.

    Updates of one object are serialised in this process so none is lost.
    """
    key = (t.account, t.container, t.obj)
    lock, users = _UPDATE_LOCKS.setdefault(key, (asyncio.Lock(), [0]))
    users[0] += 1
    try:
        async with lock:
            return await _partial_update(request, t)
    finally:
        users[0] -= 1
        if users[0] == 0:
            _UPDATE_LOCKS.pop(key, None)


async def _partial_update(request: web.Request, t: Target) -> web.Response:
    from archipelago.hashing import merkle_root
    from pithos_gw import objects, reads

    await objects._may_write(request, t)
    meta = request.app[META]
    store = request.app[BLOCKS]
    v = await objects.current(request, t)
    if v is None:
        fail(404, "Object not found")
    reads.check_conditions(request, v)
    hashes, size = v.hashes, v.bytes
    cr = request.headers.get("Content-Range")
    src_name = request.headers.get("X-Source-Object")
    if cr is None and src_name is not None:
        fail(400, "Content-Range required")
    if cr is not None:
        offset, length = _content_range(cr, size)
        if src_name is not None:
            from pithos_gw.copying import split_path

            sc, so = split_path(src_name, "X-Source-Object")
            src = Target(request.headers.get("X-Source-Account") or t.account, sc, so, t.user)
            from pithos_gw.auth import access

            if await access(request, src) in (None, "writeonly"):
                fail(403, "Forbidden")
            sv = await meta.object_get(src.account, src.container, src.obj,
                                       objects._version_param(request, "X-Source-Version"))
            if sv is None:
                fail(404, "Source object not found")
            length = sv.bytes if length is None else length
            if length > sv.bytes:
                fail(416, "Source object shorter than the range")
            chunks = while_connected(request, store.read_range(sv.hashes, sv.bytes, 0, length))
        else:
            chunks = request_body(request)
        hashes, size = await store.rewrite(hashes, size, offset, chunks, length)
    nb = request.headers.get("X-Object-Bytes")
    if nb is not None:
        if not (nb.isascii() and nb.isdigit()) or int(nb) > request.app[CONFIG].max_file_size:
            fail(400, "Bad X-Object-Bytes")
        hashes = await store.truncate(hashes, size, int(nb))
        size = int(nb)
    root = merkle_root(hashes)
    md5 = await _checksum(request, hashes, size, root)
    await store.barrier()
    nv = await meta.object_put(t.account, t.container, t.obj, size=size, hashes=hashes,
                               hash=root, checksum=md5, content_type=v.content_type,
                               meta=v.meta, modified_by=t.user, uuid=v.uuid,
                               expect=v.serial)
    if nv is None:  # a read-modify-write: the version it read must still be current
        if reads.expect_of(request, v) != ANY:
            fail(412, "Precondition Failed")
        fail(409, "Conflict: the object changed during the update, retry")
    return web.Response(status=204, headers={"ETag": etag_of(request, nv),
                                             "X-Object-Version": str(nv.serial)})
