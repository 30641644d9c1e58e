"""Dynamic Large Objects (Swift's DLO): an object with ``X-Object-Manifest:
container/prefix`` reads as the objects under that prefix, in name order, laid end to
end, evaluated at read time. Its ETag is the quoted MD5 of the segments' ETags; a copy
(without ?multipart-manifest=get) stores the joined content as a plain object.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from urllib.parse import unquote

from aiohttp import web

from pithos_gw import expiry, reads
from pithos_gw.auth import access
from pithos_gw.common import BLOCKS, META, Target, etag_of, fail
from pithos_gw.meta import ObjectVersion
from pithos_gw.store import Ingested

KEY = "X-Object-Manifest"
#: Set by a TempURL signed with a container key: segments must stay in that container.
SAME_CONTAINER = web.RequestKey("gw_dlo_same_container", bool)


def manifest_of(request: web.Request, v: ObjectVersion) -> str | None:
    """The manifest value when ``v`` is a DLO read as such (not ?multipart-manifest=get)."""
    value = v.meta.get(KEY)
    if not value or request.query.get("multipart-manifest") == "get":
        return None
    return value


def split(manifest: str) -> tuple[str, str]:
    """(container, prefix) of an X-Object-Manifest value."""
    cont, _, prefix = unquote(manifest, errors="strict").lstrip("/").partition("/")
    return cont, prefix


async def segments(request: web.Request, t: Target, manifest: str) -> list[ObjectVersion]:
    """The readable segments under the manifest's prefix, in name order."""
    cont, prefix = split(manifest)
    if request.get(SAME_CONTAINER) and cont != t.container:
        fail(401, "Unauthorized: a container's Temp URL reaches only that container")
    out = []
    for p in await request.app[META].object_list(t.account, cont, prefix):
        if expiry.expired(p):
            continue
        if t.owner or await access(request, Target(t.account, cont, p.name, t.user)) not in (
                None, "writeonly"):
            out.append(p)
    return out


def etag(request: web.Request, parts: list[ObjectVersion]) -> str:
    """Swift's DLO ETag: the quoted MD5 of the segments' ETags."""
    joined = "".join(etag_of(request, p).strip('"') for p in parts)
    return '"' + hashlib.md5(joined.encode()).hexdigest() + '"'


async def send(request: web.Request, t: Target, v: ObjectVersion, headers: dict[str, str],
               manifest: str) -> web.StreamResponse:
    """GET/HEAD of a DLO (several ranges at once: the whole object, as Swift)."""
    parts = await segments(request, t, manifest)
    headers["ETag"] = etag(request, parts)
    reads.check_conditions(request, v, headers, etag=headers["ETag"].strip('"'))
    source = reads.Segments(request.app[BLOCKS], parts)
    return await reads.send_object(request, v, headers, source=source, multi_ranges=False)


async def materialize(request: web.Request, t: Target, manifest: str) -> Ingested:
    """The DLO's joined content stored as blocks (for a copy)."""
    parts = await segments(request, t, manifest)
    store = request.app[BLOCKS]

    async def stream() -> AsyncIterator[bytes]:
        for p in parts:
            async for data in store.read_range(p.hashes, p.bytes, 0, p.bytes):
                yield data

    return await store.ingest(stream())
