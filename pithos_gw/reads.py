"""Object reads: headers, conditionals, ranges (single and multipart), versions, public URLs."""

from __future__ import annotations

import itertools
import json
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any
from xml.sax.saxutils import quoteattr

from aiohttp import web

from pithos_gw.auth import format_sharing
from pithos_gw.common import (
    BLOCKS,
    META,
    HttpError,
    Target,
    etag_of,
    fail,
    http_date,
    out_name,
    out_value,
    parse_date,
    want_format,
)
from pithos_gw.meta import ObjectVersion
from pithos_gw.meta_objects import ANY
from pithos_gw.store import BlockStore

#: More ranges than this in one Range header are ignored (Swift's limit).
MAX_RANGES = 50
_PUBLIC_HEADERS = ("ETag", "Content-Length", "Content-Type", "Content-Range", "Last-Modified",
                   "Content-Encoding", "Content-Disposition", "Accept-Ranges",
                   "Content-Security-Policy", "X-Content-Type-Options")


async def object_headers(request: web.Request, t: Target, v: ObjectVersion,
                         allowed: str = "owner", latest: bool = True) -> dict[str, str]:
    """Headers describing an object version (sharing and public only on the latest)."""
    meta = request.app[META]
    h = {"ETag": etag_of(request, v), "Content-Type": v.content_type,
         "Last-Modified": http_date(v.mtime), "X-Object-Hash": v.hash, "X-Object-UUID": v.uuid,
         "X-Object-Version": str(v.serial), "X-Object-Version-Timestamp": f"{v.mtime:.6f}",
         "X-Object-Modified-By": v.modified_by, "Accept-Ranges": "bytes",
         "X-Timestamp": f"{v.mtime:.5f}"}
    for k, val in v.meta.items():
        if not k.startswith("X-Object-Sysmeta-"):  # the gateway's own (SLO manifests)
            h[out_name(k)] = out_value(val)
    if latest:
        found, token = await meta.object_acl(v.account, v.container, v.name)
        if found:
            path, read, write = found
            h["X-Object-Sharing"] = format_sharing(read, write)
            if path != v.name:
                h["X-Object-Shared-By"] = out_value(f"{v.container}/{path}")
        if allowed == "owner":
            if token:
                h["X-Object-Public"] = f"/public/{token}"
        else:
            h["X-Object-Allowed-To"] = allowed
    disp = request.query.get("disposition-type")
    if disp in ("inline", "attachment"):
        h["Content-Disposition"] = disp + (f"; filename={out_value(v.name.split('/')[-1])}"
                                           if disp == "attachment" else "")
    return h


def _etags(value: str) -> list[str]:
    return [e.strip().strip('"').removeprefix("W/").strip('"') for e in value.split(",")]


def check_conditions(request: web.Request, v: ObjectVersion | None,
                     headers: dict[str, str] | None = None, etag: str | None = None) -> None:
    """If-Match / If-None-Match / If-(Un)Modified-Since: raise 304 or 412 as Swift does
    (``etag``: the one the object answers with, when not its own, e.g. a large object's)."""
    read = request.method in ("GET", "HEAD")
    etag = etag or (etag_of(request, v) if v else None)
    # A read's 412 carries the object's validators, as Swift's (clients compare them).
    keep = ("ETag", "Last-Modified", "X-Timestamp")
    failed = {k: val for k, val in (headers or {}).items() if k in keep} if read else {}
    im = request.headers.get("If-Match")
    if im is not None:
        tags = _etags(im)
        if v is None or ("*" not in tags and etag not in tags):
            fail(412, "Precondition Failed", failed)
    inm = request.headers.get("If-None-Match")
    if inm is not None and v is not None:
        tags = _etags(inm)
        if "*" in tags or etag in tags:
            if read:
                raise HttpError(304, "", headers or {})
            fail(412, "Precondition Failed")
    if v is None:
        return
    ius = parse_date(request.headers.get("If-Unmodified-Since"))
    if ius is not None and math.ceil(v.mtime) > ius:
        fail(412, "Precondition Failed", failed)
    ims = parse_date(request.headers.get("If-Modified-Since"))
    if read and inm is None and ims is not None and math.ceil(v.mtime) <= ims:
        raise HttpError(304, "", headers or {})


def expect_of(request: web.Request, v: ObjectVersion | None) -> int:
    """The serial a write must still find current when it commits: that of the version its
    preconditions were checked against (0: none), or ANY for a write without any."""
    if any(h in request.headers for h in ("If-Match", "If-None-Match", "If-Unmodified-Since")):
        return v.serial if v else 0
    return ANY


def parse_ranges(value: str, size: int) -> list[tuple[int, int]] | None:
    """[(start, end_exclusive)] of a Range header; None if it is not a byte-range set.

    An unsatisfiable set raises 416 with ``Content-Range: bytes */size``.
    """
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    out: list[tuple[int, int]] = []
    if spec.count(",") >= MAX_RANGES:
        return None  # too many ranges: serve the whole object, as HTTP allows
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not dash:
            return None
        try:
            if first == "":
                n = int(last)
                if n < 0:
                    return None
                if n == 0:
                    continue
                out.append((max(0, size - n), size))
                continue
            a = int(first)
            b = int(last) if last else size - 1
        except ValueError:
            return None
        if a >= size:
            continue
        if b < a:
            return None
        out.append((a, min(b, size - 1) + 1))
    if not out:
        raise HttpError(416, "Requested Range Not Satisfiable",
                        {"Content-Range": f"bytes */{size}"})
    return None if _egregious(out) else out


#: As Swift (RFC 9110 section 14.2): more overlapping pairs or out-of-order ranges than
#: these make the Range header ignored, so a tiny request cannot ask for a huge reply.
MAX_RANGE_OVERLAPS = 2
MAX_NONASCENDING_RANGES = 8


def _egregious(ranges: list[tuple[int, int]]) -> bool:
    overlaps = sum(1 for i, (a1, b1) in enumerate(ranges) for a2, b2 in ranges[i + 1 :]
                   if max(a1, a2) < min(b1, b2))
    descents = sum(1 for (a1, _), (a2, _) in itertools.pairwise(ranges) if a2 < a1)
    return overlaps > MAX_RANGE_OVERLAPS or descents > MAX_NONASCENDING_RANGES


class Segments:
    """A readable byte sequence made of object versions laid end to end (a DLO manifest)."""

    def __init__(self, store: BlockStore, parts: list[ObjectVersion]) -> None:
        self.store = store
        self.parts = parts
        self.size = sum(p.bytes for p in parts)

    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Yield the bytes [start, end)."""
        pos = 0
        for p in self.parts:
            a, b = max(start, pos), min(end, pos + p.bytes)
            if a < b:
                async for data in self.store.read_range(p.hashes, p.bytes, a - pos, b - pos):
                    yield data
            pos += p.bytes


async def send_object(request: web.Request, v: ObjectVersion, headers: dict[str, str],
                      public: bool = False, source: Segments | None = None,
                      multi_ranges: bool = True,
                      span: tuple[int, int] | None = None) -> web.StreamResponse:
    """Answer GET/HEAD with the object's data (whole, one range, or multipart ranges;
    ``multi_ranges`` False: several ranges get the whole object; ``span``: that range
    whatever the request asks, e.g. an SLO's ?part-number)."""
    src = source or Segments(request.app[BLOCKS], [v])
    size = src.size
    ranges = None
    rng = request.headers.get("Range")
    if span is not None:
        ranges = [span]
    elif rng:
        if_range = request.headers.get("If-Range")
        ok = if_range is None or if_range.strip('"') == headers["ETag"].strip('"') or (
            (ts := parse_date(if_range)) is not None and math.ceil(v.mtime) <= ts)
        if ok and (multi_ranges or "," not in rng):
            try:
                ranges = parse_ranges(rng, size)
            except HttpError as e:
                e.headers.update({k: val for k, val in headers.items() if k in (
                    "ETag", "Last-Modified", "X-Timestamp", "Accept-Ranges")})
                raise
    # Users' bytes, served on the API server's origin (where the web UI lives): an HTML or
    # SVG object opened in a browser (a public link, ?X-Auth-Token=) must not run as a page
    # of that origin: sandbox gives it an opaque one.
    headers = {**headers, "Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
    if public:
        headers = {k: val for k, val in headers.items() if k in _PUBLIC_HEADERS}
    resp = web.StreamResponse(status=200, headers=headers)
    parts: list[tuple[bytes, int, int]] = []
    if ranges and len(ranges) == 1:
        a, b = ranges[0]
        resp.set_status(206)
        resp.headers["Content-Range"] = f"bytes {a}-{b - 1}/{size}"
        resp.content_length = b - a
    elif ranges:
        boundary = secrets.token_hex(16)
        resp.set_status(206)
        resp.headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        total = 0
        for a, b in ranges:
            head = (f"--{boundary}\r\nContent-Type: {v.content_type}\r\n"
                    f"Content-Range: bytes {a}-{b - 1}/{size}\r\n\r\n").encode()
            parts.append((head, a, b))
            total += len(head) + (b - a) + 2
        tail = f"--{boundary}--\r\n".encode()
        total += len(tail)
        resp.content_length = total
    else:
        resp.content_length = size
    if request.method == "HEAD":
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    spans = [(a, b) for _, a, b in parts] if parts else [ranges[0] if ranges else (0, size)]
    async with aclosing(src.read(*spans[0])) as first:
        # Read before the headers go out: a failure here (a missing block, a dead daemon)
        # is still an ordinary error reply. Later ones abort the connection (app.py).
        piece = await anext(first, b"")
        await resp.prepare(request)
        if parts:
            await resp.write(parts[0][0])
        if piece:
            await resp.write(piece)
        async for data in first:
            await resp.write(data)
    if parts:
        await resp.write(b"\r\n")
        for head, a, b in parts[1:]:
            await resp.write(head)
            async for data in src.read(a, b):
                await resp.write(data)
            await resp.write(b"\r\n")
        await resp.write(tail)
    await resp.write_eof()
    return resp


async def versions_list(request: web.Request, t: Target) -> web.Response:
    """GET ?version=list -> {"versions": [[serial, timestamp], ...]}."""
    vers = await request.app[META].versions(t.account, t.container, t.obj)
    if not vers:
        fail(404, "Object not found")
    if want_format(request, "json") == "xml":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<object name={quoteattr(t.obj)}>'
                + "".join(f'<version timestamp="{ts:.6f}">{s}</version>' for s, ts in vers)
                + "</object>")
        return web.Response(body=body.encode(), content_type="application/xml")
    items: list[Any] = [[s, f"{ts:.6f}"] for s, ts in vers]
    return web.Response(body=json.dumps({"versions": items}).encode(),
                        content_type="application/json")


async def serve_public(request: web.Request, token: str) -> web.StreamResponse:
    """GET/HEAD /public/<token>: no auth, a reduced header set."""
    if request.method not in ("GET", "HEAD"):
        fail(405, "Method not allowed")
    meta = request.app[META]
    where = await meta.public_lookup(token)
    v = await meta.object_get(*where) if where else None
    if v is None:
        fail(404, "Not found")
    headers = await object_headers(request, Target(v.account, v.container, v.name, v.account), v)
    check_conditions(request, v, headers)
    return await send_object(request, v, headers, public=True)
