"""Object routes: GET/HEAD, PUT (streamed), COPY/MOVE, POST (meta), DELETE."""

from __future__ import annotations

import asyncio
import mimetypes

from aiohttp import BodyPartReader, web

from archipelago.hashing import merkle_root
from pithos_gw import account_quota, acl, copying, dlo, expiry, hashmaps, reads, slo
from pithos_gw.auth import access, parse_sharing, require
from pithos_gw.common import (
    BLOCKS,
    CONFIG,
    MAX_INT64,
    META,
    Target,
    check_container_name,
    check_object_name,
    etag_of,
    fail,
    fail_exact,
    http_date,
    parse_until,
    read_meta,
    request_body,
    timed,
)
from pithos_gw.meta import Container, ObjectVersion
from pithos_gw.meta_objects import ANY
from pithos_gw.store import body_chunks

_EXTRA = ("content-encoding", "content-disposition", "x-object-manifest")


def _version_param(request: web.Request, name: str = "version") -> int | None:
    raw = request.query.get(name) if name == "version" else request.headers.get(name)
    if raw is None or raw == "":
        return None
    try:
        val = int(raw)
    except ValueError:
        fail(400, f"Bad {name}")
    if not 0 <= val <= MAX_INT64:  # serials are SQLite integers
        fail(400, f"Bad {name}")
    return val


async def current(request: web.Request, t: Target) -> ObjectVersion | None:
    """The current version of ``t`` (or None, also once it expired)."""
    return await expiry.live(request, await request.app[META].object_get(
        t.account, t.container, t.obj))


def reply_headers(request: web.Request, v: ObjectVersion) -> dict[str, str]:
    """Headers of a 201/204 write reply."""
    return {"ETag": etag_of(request, v), "X-Object-Version": str(v.serial),
            "X-Object-Hash": v.hash, "Last-Modified": http_date(v.mtime)}


async def handle(request: web.Request, t: Target) -> web.StreamResponse:
    """Dispatch an object-level request."""
    check_container_name(request, t.container)
    check_object_name(request, t.obj)
    m = request.method
    if m in ("GET", "HEAD"):
        return await get(request, t)
    if m == "PUT":
        return await put(request, t)
    if m == "COPY" or m == "MOVE":
        return await copying.copy_or_move(request, t)
    if m == "POST":
        h = request.headers
        if "Content-Range" in h or "X-Source-Object" in h or "X-Object-Bytes" in h:
            return await hashmaps.partial_update(request, t)
        if h.get("Content-Type", "").startswith("multipart/form-data"):
            return await form_upload(request, t)
        return await post_meta(request, t)
    if m == "DELETE":
        return await delete(request, t)
    fail(405, "Method not allowed")


async def get(request: web.Request, t: Target) -> web.StreamResponse:
    """GET/HEAD an object, a version, its version list or its hashmap."""
    allowed = await access(request, t)
    if allowed is None or allowed == "writeonly":
        fail(403, "Forbidden")
    if request.query.get("version") == "list":
        return await reads.versions_list(request, t)
    version = _version_param(request)
    until = None
    if "until" in request.query:
        until = parse_until(request)
    v = await request.app[META].object_get(t.account, t.container, t.obj, version, until)
    if version is None and until is None:
        v = await expiry.live(request, v)
    if v is None:
        if request.headers.get("If-Match") is not None:
            fail(412, "Precondition Failed")
        fail(404, "Object not found")
    headers = await reads.object_headers(request, t, v, allowed,
                                         latest=version is None and until is None)
    slo.apply_headers(v, headers)
    if slo.is_slo(v) and request.query.get("multipart-manifest") == "get":
        return slo.manifest_reply(request, v, headers)
    manifest = dlo.manifest_of(request, v)
    if manifest and "hashmap" not in request.query:
        return await dlo.send(request, t, v, headers, manifest)
    reads.check_conditions(request, v, headers, etag=headers["ETag"].strip('"'))
    if "hashmap" in request.query:
        return await hashmaps.get_hashmap(request, v, headers)
    return await reads.send_object(request, v, headers, span=slo.part_span(request, v, headers))


_SEEN = web.RequestKey("gw_containers", dict)


async def _container_ok(request: web.Request, account: str, container: str,
                        grow: int = 0, new_object: bool = False) -> None:
    """404 without the container; 413 when ``grow`` more bytes (or one more object) would
    pass its quotas: Pithos' X-Container-Policy-Quota and Swift's container_quotas
    (X-Container-Meta-Quota-Bytes, X-Container-Meta-Quota-Count)."""
    meta = request.app[META]
    seen: dict[tuple[str, str], Container] = request.setdefault(_SEEN, {})
    c = seen.get((account, container))
    if c is None:
        c = await meta.container_get(account, container, usage=False)
        if c is None:
            fail(404, "Container not found")
        seen[(account, container)] = c
    quotas = [int(q) for q in (c.policy.get("quota"), c.meta.get("X-Container-Meta-Quota-Bytes"))
              if q and q.isascii() and q.isdigit() and int(q) > 0]
    count = c.meta.get("X-Container-Meta-Quota-Count", "")
    if (quotas and grow > 0) or (new_object and count.isascii() and count.isdigit()):
        used = await meta.container_get(account, container)
        if used is not None and quotas and grow > 0 and used.bytes + grow > min(quotas):
            fail_exact(413, "Upload exceeds quota.")
        if used is not None and new_object and count.isdigit() and used.count >= int(count):
            fail_exact(413, "Upload exceeds quota.")


async def _may_write(request: web.Request, t: Target) -> None:
    if not t.owner:
        await require(request, t, write=True)
        # Checked before any data moves: only the owner may share or publish.
        if "X-Object-Sharing" in request.headers or "X-Object-Public" in request.headers:
            fail(403, "Only the owner may change sharing or publish")


async def put(request: web.Request, t: Target) -> web.StreamResponse:
    """PUT data (streamed), a hashmap, or a copy/move (X-Copy-From, X-Move-From)."""
    if "X-Copy-From" in request.headers or "X-Move-From" in request.headers:
        return await copying.put_from(request, t)  # checks the source first, as Swift
    await _may_write(request, t)
    await _container_ok(request, t.account, t.container)
    inm = request.headers.get("If-None-Match")
    if inm is not None and inm.strip() != "*":
        fail(400, "If-None-Match only supports *")
    if request.query.get("multipart-manifest") == "put":
        return await slo.put_manifest(request, t)
    if "hashmap" in request.query:
        return await hashmaps.put_hashmap(request, t)
    cfg = request.app[CONFIG]
    clen = request.headers.get("Content-Length")
    te = request.headers.get("Transfer-Encoding", "").lower().replace(" ", "")
    if te and te != "chunked":
        fail(501, "Not Implemented: only chunked transfer coding is supported")
    if clen is None and not te:
        fail(411, "Length Required")
    digits = clen is not None and clen.isascii() and clen.isdigit()
    if clen is not None and (not digits or int(clen) > cfg.max_file_size):
        fail(413 if digits else 400, "Bad Content-Length")
    meta = expiry.apply(request, read_meta(request, "X-Object-Meta-", _EXTRA))
    sharing = _sharing(request)
    old = await current(request, t)
    if clen is not None:  # refused before the body is read when it cannot fit
        grow = int(clen) - (old.bytes if old else 0)
        await _container_ok(request, t.account, t.container, grow, new_object=old is None)
        await account_quota.check_upload(request, t.account, grow)
    reads.check_conditions(request, old)
    await check_type_change(request, t, _content_type(request, t.obj))  # before data moves
    got = await request.app[BLOCKS].ingest(request_body(request), limit=cfg.max_file_size)
    if clen is not None and got.size != int(clen):
        fail(400, "Body shorter than Content-Length")
    sent = request.headers.get("ETag")
    if sent and sent.strip('"').lower() != got.md5:
        fail(422, "Unprocessable Entity: ETag does not match the data")
    await _container_ok(request, t.account, t.container, got.size - (old.bytes if old else 0),
                        new_object=old is None)
    v = await _record(request, t, got.hashes, got.size, got.md5, meta, sharing,
                      expect=reads.expect_of(request, old))
    return web.Response(status=201, headers=reply_headers(request, v))


async def form_upload(request: web.Request, t: Target) -> web.StreamResponse:
    """POST multipart/form-data with a field X-Object-Data: creates the object as PUT would."""
    await _may_write(request, t)
    await _container_ok(request, t.account, t.container)
    reader = await request.multipart()
    while (part := await timed(request, reader.next())) is not None:
        if isinstance(part, BodyPartReader) and part.name == "X-Object-Data":
            got = await request.app[BLOCKS].ingest(
                body_chunks(lambda: timed(request, part.read_chunk(1 << 20))),
                limit=request.app[CONFIG].max_file_size)
            ctype = part.headers.get("Content-Type") or _content_type(request, t.obj)
            old = await current(request, t)
            await _container_ok(request, t.account, t.container,
                                got.size - (old.bytes if old else 0))
            v = await _record(request, t, got.hashes, got.size, got.md5, {}, None, ctype=ctype)
            return web.Response(status=201, headers=reply_headers(request, v))
        if isinstance(part, BodyPartReader):
            await timed(request, part.release())
    fail(400, "multipart body without an X-Object-Data field")


def _content_type(request: web.Request, name: str) -> str:
    ctype = request.headers.get("Content-Type")
    if ctype:
        return ctype
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _sharing(request: web.Request) -> tuple[list[str], list[str]] | None:
    raw = request.headers.get("X-Object-Sharing")
    return None if raw is None else parse_sharing(raw)


_FOLDER_TYPES = ("application/directory", "application/folder")


def is_folder_type(ctype: str) -> bool:
    """True for the types whose sharing extends to the objects below (Pithos folders)."""
    return ctype.split(";", 1)[0].strip().lower() in _FOLDER_TYPES


async def check_type_change(request: web.Request, t: Target, ctype: str) -> None:
    """403 when a non-owner would turn an object into a folder or back: a folder's sharing
    covers every object under it, so that would widen (or cut) access the owner set."""
    if t.owner:
        return
    old = await current(request, t)
    if is_folder_type(ctype) != is_folder_type(old.content_type if old else ""):
        fail(403, "Only the owner may make an object a folder or change a folder's type")


async def _record(request: web.Request, t: Target, hashes: list[str], size: int, md5: str,
                  meta: dict[str, str], sharing: tuple[list[str], list[str]] | None,
                  ctype: str | None = None, uuid: str | None = None,
                  expect: int = ANY) -> ObjectVersion:
    """Write the metadata row of a new version whose blocks are stored already; 412 when
    ``expect`` (reads.expect_of) no longer holds: another writer came first."""
    ctype = ctype or _content_type(request, t.obj)
    await check_type_change(request, t, ctype)
    root = merkle_root(hashes) if len(hashes) < 1024 else await asyncio.to_thread(
        merkle_root, hashes)
    await request.app[BLOCKS].barrier()
    v = await request.app[META].object_put(
        t.account, t.container, t.obj, size=size, hashes=hashes, hash=root, checksum=md5,
        content_type=ctype, meta=meta, modified_by=t.user,
        uuid=uuid, expect=expect)
    if v is None:
        fail(412, "Precondition Failed")
    await _apply_sharing_public(request, t, sharing)
    return v


async def _apply_sharing_public(request: web.Request, t: Target,
                                sharing: tuple[list[str], list[str]] | None) -> None:
    meta = request.app[META]
    if sharing is not None:
        if not t.owner:
            fail(403, "Only the owner may change sharing")
        await meta.sharing_set(t.account, t.container, t.obj, *sharing)
    pub = request.headers.get("X-Object-Public")
    if pub is not None:
        if not t.owner:
            fail(403, "Only the owner may publish")
        on = pub.strip().lower() in ("true", "yes", "1")
        if pub.strip().lower() not in ("true", "yes", "1", "false", "no", "0", ""):
            fail(400, "Bad X-Object-Public")
        await meta.public_set(t.account, t.container, t.obj, on)


async def post_meta(request: web.Request, t: Target) -> web.StreamResponse:
    """POST meta, sharing and public state (Swift replaces meta; ?update merges)."""
    await _may_write(request, t)
    v = await current(request, t)
    if v is None:
        fail(404, "Object not found")
    reads.check_conditions(request, v)
    new = read_meta(request, "X-Object-Meta-", _EXTRA)
    only_perms = not new and ("X-Object-Sharing" in request.headers
                              or "X-Object-Public" in request.headers)
    if not only_perms:
        if "update" in request.query:
            merged = dict(v.meta)
            for k, val in new.items():
                if val:
                    merged[k] = val
                else:
                    merged.pop(k, None)
            new = merged
        new = expiry.apply(request, new, v.meta)
        new.update({k: val for k, val in v.meta.items() if slo.hidden(k)})  # system meta stays
        ctype = request.headers.get("Content-Type")
        await request.app[META].object_set_meta(t.account, t.container, t.obj, new,
                                                ctype if ctype and t.owner else None)
    await _apply_sharing_public(request, t, _sharing(request))
    return web.Response(status=202)


async def delete(request: web.Request, t: Target) -> web.StreamResponse:
    """DELETE an object (owner or a container write ACL); ?delimiter also deletes
    everything under it."""
    if not t.owner and not await acl.may_write(request, t):
        fail(403, "Forbidden")
    expiry.check_if_delete_at(request, None)  # its syntax, before looking the object up
    meta = request.app[META]
    if "until" in request.query:
        until = parse_until(request)
        assert until is not None
        await meta.purge(t.account, t.container, t.obj, until)
        return web.Response(status=204)
    delim = request.query.get("delimiter")
    if delim:
        for v in await meta.object_list(t.account, t.container, t.obj + delim):
            await meta.object_delete(t.account, t.container, v.name)
    v = await current(request, t)
    if v is None:
        if delim:
            return web.Response(status=204)
        fail(404, "Object not found")
    reads.check_conditions(request, v)
    checked = expiry.check_if_delete_at(request, v) or reads.expect_of(request, v) != ANY
    if slo.is_slo(v) and request.query.get("multipart-manifest") == "delete":
        return await slo.delete_manifest(request, t, v)
    # what the conditions were checked on must still be current when the delete commits
    if not await meta.object_delete(t.account, t.container, t.obj,
                                    expect=v.serial if checked else ANY):
        fail(412, "Precondition Failed")
    # Swift's DELETE answers carry its (empty) error-page type; clients compare it.
    return web.Response(status=204, headers={"Content-Type": "text/html; charset=UTF-8"})


