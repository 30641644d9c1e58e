"""Server-side copies and moves: COPY/MOVE with Destination, PUT with X-Copy-From or
X-Move-From, across accounts (Destination-Account, X-Copy-From-Account).

A whole-object copy records a new version over the source's map: no data moves. A copy
with a Range header copies only those bytes (they are re-read and stored as new blocks,
which deduplicate against the source's where they align).
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import quote, unquote

from aiohttp import web

from pithos_gw import dlo, expiry, objects, reads, slo
from pithos_gw.auth import access
from pithos_gw.common import (
    BLOCKS,
    META,
    Target,
    check_container_name,
    check_object_name,
    fail,
    http_date,
    read_meta,
    while_connected,
)


def split_path(value: str, header: str = "Destination") -> tuple[str, str]:
    """``container/object`` of a Destination or X-Copy-From value (412 otherwise, as Swift)."""
    try:
        path = unquote(value, errors="strict")
    except UnicodeDecodeError:
        fail(412, "Invalid UTF8 or contains NULL")
    path = path[1:] if path.startswith("/") else path
    cont, _, obj = path.partition("/")
    if not cont or not obj:
        fail(412, f"{header} header must be of the form <container name>/<object name>")
    return cont, obj


async def copy_or_move(request: web.Request, t: Target) -> web.StreamResponse:
    """COPY or MOVE ``t`` to the Destination (412 without one)."""
    dest = request.headers.get("Destination")
    if not dest:
        fail(412, "You must provide a Destination header")
    dc, do = split_path(dest)
    dst = Target(request.headers.get("Destination-Account") or t.account, dc, do, t.user)
    return await copy_move(request, t, dst, request.method == "MOVE")


async def put_from(request: web.Request, t: Target) -> web.StreamResponse:
    """PUT with X-Copy-From (or Pithos' X-Move-From)."""
    move = "X-Copy-From" not in request.headers
    hdr = "X-Move-From" if move else "X-Copy-From"
    sc, so = split_path(request.headers[hdr], hdr)
    h = request.headers
    account = h.get("X-Copy-From-Account") or h.get("X-Source-Account") or t.account
    return await copy_move(request, Target(account, sc, so, t.user), t, move)


async def copy_move(request: web.Request, src: Target, dst: Target,
                    move: bool) -> web.StreamResponse:
    """Copy or move an object: the new version reuses the source map, no data moves."""
    check_container_name(request, dst.container)
    check_object_name(request, dst.obj)
    got = await access(request, src)
    if got is None or got == "writeonly" or (move and not src.owner):
        # A move deletes the source: only its owner may (DELETE is owner-only; Pithos'
        # move_object refuses any other user). Sharees copy.
        fail(403, "Forbidden")
    version = objects._version_param(request, "X-Source-Version") if not move else None
    meta = request.app[META]
    v = await meta.object_get(src.account, src.container, src.obj, version)
    if version is None:
        v = await expiry.live(request, v)
    if v is None:  # before the destination's checks, as Swift: the source is read first
        fail(404, "Source object not found")
    await objects._may_write(request, dst)
    hashes, size, md5 = v.hashes, v.bytes, v.checksum
    manifest = dlo.manifest_of(request, v)
    if manifest:  # a DLO copies as its joined content, a plain object
        joined = await dlo.materialize(request, src, manifest)
        hashes, size, md5 = joined.hashes, joined.size, joined.md5
        v = replace(v, hashes=hashes, bytes=size, checksum=md5,
                    meta={k: val for k, val in v.meta.items() if k != dlo.KEY})
    span = slo.part_span(request, v, {}) if not move else None
    if slo.is_slo(v) and request.query.get("multipart-manifest") != "get":
        # A copy of an SLO is its content as a plain object (Swift's); its MD5 is
        # computed when the manifest joined its segments' maps without reading them.
        md5 = md5 or await request.app[BLOCKS].md5_of(hashes, size)
        v = replace(v, checksum=md5, meta={k: val for k, val in v.meta.items()
                                            if not slo.hidden(k)})
    elif slo.is_slo(v) and src.account != dst.account:
        v = await slo.rebuild(request, dst, v)  # its segments as the destination sees them
        hashes, size, md5 = v.hashes, v.bytes, v.checksum
    rng = request.headers.get("Range")
    ranges = reads.parse_ranges(rng, v.bytes) if rng and not move else None
    if span is not None:
        ranges = [span]
    if ranges and len(ranges) == 1:
        a, b = ranges[0]
        store = request.app[BLOCKS]
        got_range = await store.ingest(while_connected(
            request, store.read_range(hashes, size, a, b)))
        hashes, size, md5 = got_range.hashes, got_range.size, got_range.md5
    old = await objects.current(request, dst)
    await objects._container_ok(request, dst.account, dst.container,
                                size - (old.bytes if old else 0))
    reads.check_conditions(request, old)
    fresh = request.headers.get("X-Fresh-Metadata", "").lower() in ("true", "1", "yes")
    new_meta = {} if fresh else dict(v.meta)
    new_meta.update(read_meta(request, "X-Object-Meta-", objects._EXTRA))
    new_meta = expiry.apply(request, {k: val for k, val in new_meta.items() if val}, v.meta)
    ctype = v.content_type
    if request.method != "PUT" and "ignore_content_type" not in request.query:
        ctype = request.headers.get("Content-Type") or ctype
    same = (src.account, src.container, src.obj) == (dst.account, dst.container, dst.obj)
    nv = await objects._record(request, dst, hashes, size, md5, new_meta,
                               objects._sharing(request), ctype=ctype,
                               uuid=v.uuid if move else None,
                               expect=reads.expect_of(request, old))
    if move and not same:
        await meta.object_delete(src.account, src.container, src.obj)
    delim = request.query.get("delimiter")
    if delim and not same:
        await _copy_tree(request, src, dst, delim, move)
    headers = objects.reply_headers(request, nv)
    headers["X-Copied-From"] = quote(f"{src.container}/{src.obj}")
    if src.account != dst.account:
        headers["X-Copied-From-Account"] = quote(src.account)
    headers["X-Copied-From-Last-Modified"] = http_date(v.mtime)
    return web.Response(status=201, headers=headers)


async def _copy_tree(request: web.Request, src: Target, dst: Target, delim: str,
                     move: bool) -> None:
    """COPY/MOVE ?delimiter: also every object under ``src.obj + delim`` (maps only)."""
    meta = request.app[META]
    base = src.obj + delim
    for v in await meta.object_list(src.account, src.container, base):
        s = Target(src.account, src.container, v.name, src.user)
        d = Target(dst.account, dst.container, dst.obj + delim + v.name[len(base):], dst.user)
        got = await access(request, s)
        if got is None or got == "writeonly" or (move and not s.owner):
            continue
        check_object_name(request, d.obj)
        await objects._may_write(request, d)
        await objects._record(request, d, v.hashes, v.bytes, v.checksum, dict(v.meta), None,
                              ctype=v.content_type, uuid=v.uuid if move else None)
        if move:
            await meta.object_delete(s.account, s.container, s.obj)
