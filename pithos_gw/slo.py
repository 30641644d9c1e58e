"""Static Large Objects (Swift's SLO): PUT ?multipart-manifest=put, GET/HEAD, GET
?multipart-manifest=get, DELETE ?multipart-manifest=delete.

The manifest object is stored as one ordinary map: when every segment but the last is
a whole number of blocks (what `swift upload --use-slo -S` and rclone make with the
usual sizes), its map is the segments' maps laid end to end, so no byte is copied or
stored again; otherwise the segments' bytes are streamed into new blocks (which
deduplicate where they align). The manifest itself (Swift's JSON) is kept in system
metadata that never goes out as a header; the ETag is Swift's: the MD5 of the
segments' ETags, quoted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from pithos_gw import expiry, objects
from pithos_gw.auth import access
from pithos_gw.common import (
    BLOCKS,
    CONFIG,
    META,
    Target,
    etag_of,
    fail,
    fail_exact,
    read_meta,
    timed,
)
from pithos_gw.listing import iso
from pithos_gw.meta import ObjectVersion
from pithos_gw.store import nblocks

#: Where the manifest JSON lives in the version's metadata (never sent as a header).
SYSMETA = "X-Object-Sysmeta-Slo-Manifest"
ETAG_KEY = "X-Object-Sysmeta-Slo-Etag"
MAX_SEGMENTS = 1000
MIN_SEGMENT = 1
MAX_MANIFEST = 8 << 20


def is_slo(v: ObjectVersion) -> bool:
    """True for a static large object's manifest version."""
    return SYSMETA in v.meta


def hidden(key: str) -> bool:
    """True for metadata kept from clients (system metadata)."""
    return key.startswith("X-Object-Sysmeta-")


async def _body(request: web.Request) -> bytes:
    data = bytearray()
    while chunk := await timed(request, request.content.readany()):
        data += chunk
        if len(data) > MAX_MANIFEST:
            fail(413, "Manifest too large")
    return bytes(data)


def _segments(raw: bytes) -> list[dict[str, Any]]:
    try:
        doc = json.loads(raw)
    except ValueError:
        fail_exact(400, "Manifest must be valid JSON.\n")
    if not isinstance(doc, list) or not doc:
        fail_exact(400, "Manifest must be a list of segments.\n")
    if len(doc) > MAX_SEGMENTS:
        fail_exact(400, f"Number of segments must be <= {MAX_SEGMENTS}\n")
    for seg in doc:
        if not isinstance(seg, dict) or not isinstance(seg.get("path"), str):
            fail_exact(400, "Index 0: segment must have a path\n")
        if set(seg) - {"path", "etag", "size_bytes", "range"}:
            fail_exact(400, "Index 0: extraneous keys in segment\n")
        rng = seg.get("range")
        if rng is not None and not (isinstance(rng, str) and "-" in rng):
            fail_exact(400, "Index 0: invalid range\n")
    return doc


async def put_manifest(request: web.Request, t: Target) -> web.StreamResponse:
    """PUT ?multipart-manifest=put: check every segment, then record the whole object."""
    meta_store = request.app[META]
    segs = _segments(await _body(request))
    parts: list[ObjectVersion] = []
    spans: list[tuple[int, int]] = []
    errors: list[list[str]] = []
    for seg in segs:
        cont, _, name = seg["path"].lstrip("/").partition("/")
        st = Target(t.account, cont, name, t.user)
        v = None
        if cont and name and await access(request, st) not in (None, "writeonly"):
            v = await expiry.live(request, await meta_store.object_get(t.account, cont, name))
        if v is None:
            errors.append([seg["path"], "404 Not Found"])
            continue
        etag = seg.get("etag")
        if etag and etag.strip('"') != etag_of(request, v).strip('"'):
            errors.append([seg["path"], "Etag Mismatch"])
        size = seg.get("size_bytes")
        if size is not None and size != v.bytes:
            errors.append([seg["path"], "Size Mismatch"])
        a, b = 0, v.bytes
        if seg.get("range"):
            first, _, last = seg["range"].partition("-")
            try:
                a, b = (int(first), int(last) + 1) if first else (v.bytes - int(last), v.bytes)
            except ValueError:
                errors.append([seg["path"], "Invalid Range"])
                continue
            a, b = max(0, a), min(b, v.bytes)
            if a >= b:
                errors.append([seg["path"], "Unsatisfiable Range"])
                continue
        parts.append(v)
        spans.append((a, b))
    if errors:
        body = "Errors:\n" + "".join(f"{p}, {why}\n" for p, why in errors)
        fail_exact(400, body)
    total = sum(b - a for a, b in spans)
    if total > request.app[CONFIG].max_file_size * MAX_SEGMENTS:
        fail(413, "Manifest too large")
    hashes, md5 = await _assemble(request, parts, spans)
    etag = hashlib.md5("".join(etag_of(request, p).strip('"') for p in parts).encode())
    listing = [{"name": f"/{p.container}/{p.name}", "hash": etag_of(request, p).strip('"'),
                "bytes": p.bytes, "content_type": p.content_type,
                "last_modified": iso(p.mtime)} for p in parts]
    for item, (a, b), p in zip(listing, spans, parts, strict=True):
        if (a, b) != (0, p.bytes):
            item["range"] = f"{a}-{b - 1}"
    meta = expiry.apply(request, read_meta(request, "X-Object-Meta-", objects._EXTRA))
    meta[SYSMETA] = json.dumps(listing)
    meta[ETAG_KEY] = etag.hexdigest()
    old = await objects.current(request, t)
    await objects._container_ok(request, t.account, t.container,
                                total - (old.bytes if old else 0))
    v = await objects._record(request, t, hashes, total, md5, meta, objects._sharing(request))
    headers = objects.reply_headers(request, v)
    headers["ETag"] = f'"{etag.hexdigest()}"'
    return web.Response(status=201, headers=headers)


async def _assemble(request: web.Request, parts: list[ObjectVersion],
                    spans: list[tuple[int, int]]) -> tuple[list[str], str]:
    """The manifest's map (segments' maps joined when whole and block-aligned, else new
    blocks) and the MD5 of the whole content ("" when joined: it would need a read)."""
    store = request.app[BLOCKS]
    bs = store.block_size
    whole = all((a, b) == (0, p.bytes) for p, (a, b) in zip(parts, spans, strict=True))
    if whole and all(p.bytes % bs == 0 for p in parts[:-1]):
        out: list[str] = []
        for p in parts:
            out.extend(p.hashes[: nblocks(p.bytes, bs)] if p.bytes else [])
        return out or list(parts[-1].hashes), ""

    async def stream() -> AsyncIterator[bytes]:
        for p, (a, b) in zip(parts, spans, strict=True):
            async for data in store.read_range(p.hashes, p.bytes, a, b):
                yield data

    got = await store.ingest(stream())
    return got.hashes, got.md5


def apply_headers(v: ObjectVersion, headers: dict[str, str]) -> None:
    """GET/HEAD headers of an SLO: Swift's quoted ETag, X-Static-Large-Object."""
    for k in [k for k in headers if hidden(k)]:
        del headers[k]
    if is_slo(v):
        headers["ETag"] = f'"{v.meta.get(ETAG_KEY, "")}"'
        headers["X-Static-Large-Object"] = "True"


def manifest_reply(request: web.Request, v: ObjectVersion,
                   headers: dict[str, str]) -> web.Response:
    """GET ?multipart-manifest=get of an SLO: its JSON manifest."""
    body = v.meta[SYSMETA].encode()
    headers = {k: val for k, val in headers.items() if k not in ("Accept-Ranges",)}
    headers["ETag"] = hashlib.md5(body).hexdigest()
    headers["X-Static-Large-Object"] = "True"
    headers["Content-Type"] = "application/json; charset=utf-8"
    return web.Response(body=body if request.method == "GET" else None, headers=headers,
                        status=200)


async def delete_manifest(request: web.Request, t: Target, v: ObjectVersion) -> web.Response:
    """DELETE ?multipart-manifest=delete: the segments, then the manifest (bulk reply)."""
    meta = request.app[META]
    deleted, missing = 0, 0
    errors: list[list[str]] = []
    for seg in json.loads(v.meta[SYSMETA]):
        cont, _, name = seg["name"].lstrip("/").partition("/")
        st = Target(t.account, cont, name, t.user)
        if not st.owner:
            errors.append([seg["name"], "403 Forbidden"])
            continue
        try:
            await meta.object_delete(t.account, cont, name)
            deleted += 1
        except Exception:
            missing += 1
    await meta.object_delete(t.account, t.container, t.obj)
    deleted += 1
    doc = {"Number Deleted": deleted, "Number Not Found": missing, "Errors": errors,
           "Response Status": "200 OK" if not errors else "400 Bad Request",
           "Response Body": ""}
    return web.json_response(doc)
