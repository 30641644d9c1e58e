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

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from pithos_gw import expiry, objects, reads
from pithos_gw.auth import access
from pithos_gw.common import (
    BLOCKS,
    CONFIG,
    META,
    HttpError,
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


def seg_etag(request: web.Request, v: ObjectVersion) -> str:
    """The ETag a segment answers with, unquoted (a nested SLO's is its manifest ETag)."""
    return v.meta.get(ETAG_KEY) or etag_of(request, v).strip('"')


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
    for i, seg in enumerate(doc):
        if not isinstance(seg, dict) or (set(seg) - {"path", "etag", "size_bytes", "range",
                                                     "data"}):
            fail_exact(400, f"Index {i}: invalid segment\n")
        if ("data" in seg) == ("path" in seg) or not isinstance(
                seg.get("path", seg.get("data")), str):
            fail_exact(400, f"Index {i}: a segment has either a path or data\n")
        rng = seg.get("range")
        if rng is not None and not (isinstance(rng, str) and "-" in rng):
            fail_exact(400, f"Index {i}: invalid range\n")
    return doc


@dataclass
class Piece:
    """One manifest entry: a span [a, b) of a stored object, or inline data."""

    etag: str
    item: dict[str, Any]
    v: ObjectVersion | None = None
    a: int = 0
    b: int = 0
    data: bytes = b""

    @property
    def size(self) -> int:
        """Bytes this piece contributes."""
        return self.b - self.a if self.v is not None else len(self.data)

    @property
    def whole(self) -> bool:
        """True for a whole stored object (its map can be reused as is)."""
        return self.v is not None and (self.a, self.b) == (0, self.v.bytes)


async def _piece(request: web.Request, t: Target, seg: dict[str, Any]) -> Piece | str:
    """The piece a manifest entry names, or why it is refused."""
    if "data" in seg:
        try:
            data = base64.b64decode(seg["data"], validate=True)
        except ValueError:
            return "Invalid base64 data"
        return Piece(hashlib.md5(data).hexdigest(), {"data": seg["data"]}, data=data)
    cont, _, name = seg["path"].lstrip("/").partition("/")
    if not cont or not name:
        return "404 Not Found"
    if await access(request, Target(t.account, cont, name, t.user)) in (None, "writeonly"):
        return "403 Forbidden"
    v = await expiry.live(request, await request.app[META].object_get(t.account, cont, name))
    if v is None:
        return "404 Not Found"
    etag = seg_etag(request, v)
    if seg.get("etag") and seg["etag"].strip('"') != etag:
        return "Etag Mismatch"
    if seg.get("size_bytes") is not None and seg["size_bytes"] != v.bytes:
        return "Size Mismatch"
    a, b = 0, v.bytes
    if seg.get("range"):
        first, _, last = seg["range"].partition("-")
        try:
            a, b = (int(first), int(last) + 1 if last else v.bytes) if first else (
                v.bytes - int(last), v.bytes)
        except ValueError:
            return "Invalid Range"
        a, b = max(0, a), min(b, v.bytes)
        if a >= b:
            return "Unsatisfiable Range"
    item = {"name": f"/{v.container}/{v.name}", "hash": etag, "bytes": v.bytes,
            "content_type": v.content_type, "last_modified": iso(v.mtime)}
    if (a, b) != (0, v.bytes):
        item["range"] = f"{a}-{b - 1}"
        etag = f"{etag}:{a}-{b - 1};"  # Swift's: a ranged segment counts with its range
    return Piece(etag, item, v, a, b)


def raw_manifest(v: ObjectVersion) -> list[dict[str, Any]]:
    """The manifest of an SLO as a PUT sends it (paths, ETags, sizes, ranges, data)."""
    return [{"data": it["data"]} if "data" in it else
            {"path": it["name"], "etag": it["hash"], "size_bytes": it["bytes"],
             **({"range": it["range"]} if "range" in it else {})}
            for it in json.loads(v.meta[SYSMETA])]


async def rebuild(request: web.Request, dst: Target, v: ObjectVersion) -> ObjectVersion:
    """``v`` as its manifest resolves in ``dst``'s account (a manifest copied to another
    account names that account's segments): 400 listing every one the requester cannot
    read there."""
    hashes, size, etag, listing = await _resolve(request, dst, raw_manifest(v))
    meta = {**v.meta, SYSMETA: listing, ETAG_KEY: etag}
    return replace(v, hashes=hashes[0], bytes=size, checksum=hashes[1], meta=meta)


async def _resolve(request: web.Request, t: Target, segs: list[dict[str, Any]]
                   ) -> tuple[tuple[list[str], str], int, str, str]:
    """((map, md5), bytes, SLO ETag, stored manifest) of segments read in ``t``'s account."""
    pieces: list[Piece] = []
    errors: list[str] = []
    for seg in segs:
        got = await _piece(request, t, seg)
        if isinstance(got, str):
            errors.append(f"{seg.get('path', 'data')}, {got}\n")
        else:
            pieces.append(got)
    if errors:
        fail_exact(400, "Errors:\n" + "".join(errors))
    etag = hashlib.md5("".join(p.etag for p in pieces).encode()).hexdigest()
    total = sum(p.size for p in pieces)
    return (await _assemble(request, pieces), total, etag,
            json.dumps([p.item for p in pieces]))


async def put_manifest(request: web.Request, t: Target) -> web.StreamResponse:
    """PUT ?multipart-manifest=put: check every segment, then record the whole object."""
    pieces: list[Piece] = []
    errors: list[str] = []
    for seg in _segments(await _body(request)):
        got = await _piece(request, t, seg)
        if isinstance(got, str):
            errors.append(f"{seg.get('path', 'data')}, {got}\n")
        else:
            pieces.append(got)
    if any(p.v is not None and (p.v.container, p.v.name) == (t.container, t.obj)
           for p in pieces):
        errors.append(f"/{t.container}/{t.obj}, a manifest cannot name itself\n")
    if errors:
        fail_exact(400, "Errors:\n" + "".join(errors))
    total = sum(p.size for p in pieces)
    if total > request.app[CONFIG].max_file_size * MAX_SEGMENTS:
        fail(413, "Manifest too large")
    etag = hashlib.md5("".join(p.etag for p in pieces).encode()).hexdigest()
    meta = expiry.apply(request, read_meta(request, "X-Object-Meta-", objects._EXTRA))
    meta[SYSMETA] = json.dumps([p.item for p in pieces])
    meta[ETAG_KEY] = etag
    old = await objects.current(request, t)
    reads.check_conditions(request, old)
    await objects._container_ok(request, t.account, t.container,
                                total - (old.bytes if old else 0))
    hashes, md5 = await _assemble(request, pieces)
    v = await objects._record(request, t, hashes, total, md5, meta, objects._sharing(request),
                              expect=reads.expect_of(request, old))
    headers = objects.reply_headers(request, v)
    headers["ETag"] = f'"{etag}"'
    return web.Response(status=201, headers=headers)


async def _assemble(request: web.Request, pieces: list[Piece]) -> tuple[list[str], str]:
    """The manifest's map (segments' maps joined when whole and block-aligned, else new
    blocks) and the MD5 of the whole content ("" when joined: it would need a read)."""
    store = request.app[BLOCKS]
    bs = store.block_size
    if all(p.whole for p in pieces) and all(p.size % bs == 0 for p in pieces[:-1]):
        out: list[str] = []
        for p in pieces:
            assert p.v is not None
            out.extend(p.v.hashes[: nblocks(p.size, bs)] if p.size else [])
        return out or list(pieces[-1].v.hashes if pieces[-1].v else []), ""

    async def stream() -> AsyncIterator[bytes]:
        for p in pieces:
            if p.v is None:
                yield p.data
                continue
            async for data in store.read_range(p.v.hashes, p.v.bytes, p.a, p.b):
                yield data

    got = await store.ingest(stream())
    return got.hashes, got.md5


def apply_headers(v: ObjectVersion, headers: dict[str, str]) -> None:
    """GET/HEAD headers of an SLO: Swift's quoted ETag, X-Static-Large-Object and the
    manifest's own ETag."""
    for k in [k for k in headers if hidden(k)]:
        del headers[k]
    if is_slo(v):
        headers["ETag"] = f'"{v.meta.get(ETAG_KEY, "")}"'
        headers["X-Static-Large-Object"] = "True"
        headers["X-Manifest-Etag"] = manifest_etag(v)


def manifest_etag(v: ObjectVersion) -> str:
    """MD5 of the manifest as GET ?multipart-manifest=get returns it."""
    return hashlib.md5(v.meta[SYSMETA].encode()).hexdigest()


def listing_item(v: ObjectVersion, item: dict[str, Any]) -> None:
    """Container listing fields of an SLO: hash = the manifest's MD5, slo_etag quoted."""
    if is_slo(v):
        item["hash"] = manifest_etag(v)
        item["slo_etag"] = f'"{v.meta.get(ETAG_KEY, "")}"'


def part_span(request: web.Request, v: ObjectVersion,
              headers: dict[str, str]) -> tuple[int, int] | None:
    """[a, b) of ?part-number=N of an SLO (None without the parameter); 400 when not a
    positive integer, 416 past the last part (as Swift, with X-Parts-Count)."""
    raw = request.query.get("part-number")
    if raw is None or not is_slo(v):
        return None
    items = json.loads(v.meta[SYSMETA])
    if not (raw.isascii() and raw.isdigit() and int(raw) > 0):
        fail_exact(400, "Part number must be an integer greater than 0")
    headers["X-Parts-Count"] = str(len(items))
    n = int(raw)
    if n > len(items):
        headers["Content-Range"] = f"bytes */{v.bytes}"
        raise HttpError(416, "The requested part number is not satisfiable", headers,
                        body=b"The requested part number is not satisfiable")
    pos = 0
    for i, it in enumerate(items, start=1):
        if "data" in it:
            size = len(base64.b64decode(it["data"]))
        elif "range" in it:
            first, _, last = it["range"].partition("-")
            size = int(last) - int(first) + 1
        else:
            size = it["bytes"]
        if i == n:
            return pos, pos + size
        pos += size
    return None


def manifest_reply(request: web.Request, v: ObjectVersion,
                   headers: dict[str, str]) -> web.Response:
    """GET ?multipart-manifest=get of an SLO: its JSON manifest."""
    body = v.meta[SYSMETA].encode()
    if request.query.get("format") == "raw":  # as a PUT would send it (re-uploadable)
        body = json.dumps(raw_manifest(v)).encode()
    headers = {k: val for k, val in headers.items()
               if k not in ("Accept-Ranges", "X-Manifest-Etag")}
    headers["ETag"] = hashlib.md5(body).hexdigest()
    headers["X-Static-Large-Object"] = "True"
    if request.query.get("format") != "raw":  # raw keeps the object's own type
        headers["Content-Type"] = "application/json; charset=utf-8"
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return web.Response(headers=headers, status=200)
    return web.Response(body=body, headers=headers, status=200)


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
