"""Container routes: PUT, HEAD, GET (object listing), POST (meta or block upload), DELETE."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pithos_gw import acl, hashmaps, slo
from pithos_gw.auth import access, format_sharing, require_owner
from pithos_gw.common import (
    BLOCKS,
    META,
    Target,
    check_container_name,
    check_meta_totals,
    fail,
    http_date,
    out_name,
    out_value,
    parse_until,
    read_meta,
)
from pithos_gw.listing import iso, listing_limit, listing_type, page, render, reversed_listing
from pithos_gw.meta import Container, ObjectVersion


def _policy(request: web.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    v = request.headers.get("X-Container-Policy-Versioning")
    if v is not None:
        if v.lower() not in ("auto", "none", ""):
            fail(400, "Bad versioning policy")
        out["versioning"] = v.lower()
    q = request.headers.get("X-Container-Policy-Quota")
    if q is not None:
        if q and not (q.isascii() and q.isdigit()):
            fail(400, "Bad quota policy")
        out["quota"] = q
    p = request.headers.get("X-Container-Policy-Project")
    if p is not None:
        out["project"] = p
    for kind in ("read", "write"):
        for hdr in (f"X-Container-{kind}", f"X-Remove-Container-{kind}"):
            if hdr in request.headers:
                out[kind] = "" if "Remove" in hdr else acl.parse_acl(request.headers[hdr])
    sp = request.headers.get("X-Storage-Policy")
    if sp is not None and sp.strip().lower() not in ("", "default"):
        fail(400, f"Invalid X-Storage-Policy {sp[:64]!r}")
    return out


def container_headers(request: web.Request, c: Container) -> dict[str, str]:
    """X-Container-* headers (usage, block size and hash, policy, meta)."""
    bs = request.app[BLOCKS].block_size
    h = {"X-Container-Object-Count": str(c.count), "X-Container-Bytes-Used": str(c.bytes),
         "X-Container-Block-Size": str(bs), "X-Container-Block-Hash": "sha256",
         "X-Container-Policy-Versioning": c.policy.get("versioning", "auto"),
         "X-Container-Policy-Quota": c.policy.get("quota", "0"),
         "Last-Modified": http_date(c.mtime), "X-Storage-Policy": "default"}
    for kind in ("read", "write"):
        if c.policy.get(kind):
            h[f"X-Container-{kind.capitalize()}"] = c.policy[kind]
    for k, v in c.meta.items():
        h[out_name(k)] = out_value(v)
    return h


async def get_container(request: web.Request, t: Target,
                        until: float | None = None) -> Container:
    """The container ``t`` names, or 404."""
    c = await request.app[META].container_get(t.account, t.container, until)
    if c is None:
        fail(404, "Container not found")
    return c


async def handle(request: web.Request, t: Target) -> web.StreamResponse:
    """Dispatch a container-level request."""
    check_container_name(request, t.container)
    meta = request.app[META]
    m = request.method
    if m in ("GET", "HEAD") and not t.owner:
        if await acl.may_list(request, t):
            return await _read(request, t, m)
        if m == "GET":
            return await shared_listing(request, t)
    require_owner(t)
    if m == "PUT":
        created = await meta.container_put(t.account, t.container,
                                           read_meta(request, "X-Container-Meta-"),
                                           _policy(request))
        return web.Response(status=201 if created else 202)
    if m in ("HEAD", "GET"):
        return await _read(request, t, m)
    if m == "POST":
        await get_container(request, t)
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("application/octet-stream"):
            return await hashmaps.upload_blocks(request, t)
        new_meta = read_meta(request, "X-Container-Meta-")
        old_c = await get_container(request, t)
        check_meta_totals(request, old_c.meta, new_meta, "X-Container-Meta-")
        await meta.container_update(t.account, t.container, new_meta, _policy(request),
                                    replace=False)  # Swift and kamaki (?update) both merge
        return web.Response(status=204)
    if m == "DELETE":
        await get_container(request, t)
        until = parse_until(request)
        if until is not None:
            await meta.purge(t.account, t.container, None, until)
            return web.Response(status=204)
        if request.query.get("delimiter"):
            for v in await meta.object_list(t.account, t.container):
                await meta.object_delete(t.account, t.container, v.name)
        await meta.container_delete(t.account, t.container)
        return web.Response(status=204)
    fail(405, "Method not allowed")


async def _read(request: web.Request, t: Target, m: str) -> web.StreamResponse:
    """HEAD or GET (listing) of a container."""
    until = parse_until(request)
    c = await get_container(request, t, until)
    headers = container_headers(request, c)
    if not t.owner:  # the ACLs are the owner's business
        headers.pop("X-Container-Read", None)
        headers.pop("X-Container-Write", None)
    if until is not None:
        headers["X-Container-Until-Timestamp"] = http_date(until)
    if m == "HEAD":
        headers["Content-Type"] = listing_type(request)
        return web.Response(status=204, headers=headers)
    return await listing(request, t, headers, until)


_META_RE = re.compile(r"^\s*(!?)([^!=<>]+?)\s*(?:(!=|<=|>=|=|<|>)\s*(.*?))?\s*$")
_OPS: dict[str, Callable[[str, str], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge}


def meta_filter(spec: str) -> Callable[[ObjectVersion], bool]:
    """The ``meta=k,!k,k=v,k!=v,k<v,...`` listing filter over X-Object-Meta- keys."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in spec.split(","):
        if not term.strip():
            continue
        m = _META_RE.match(term)
        if not m:
            fail(400, "Bad meta filter")
        neg, key, op, val = m.groups()
        key = key.strip().lower()
        if neg:
            tests.append(lambda d, k=key: k not in d)
        elif op is None:
            tests.append(lambda d, k=key: k in d)
        else:
            tests.append(lambda d, k=key, f=_OPS[op], x=val: k in d and f(d[k], x))

    def match(v: ObjectVersion) -> bool:
        d = {k[len("X-Object-Meta-"):].lower(): val for k, val in v.meta.items()
             if k.startswith("X-Object-Meta-")}
        return all(t(d) for t in tests)

    return match


def object_item(request: web.Request, v: ObjectVersion) -> dict[str, Any]:
    """One JSON listing entry."""
    item = {"name": v.name, "bytes": v.bytes, "content_type": v.content_type,
            "last_modified": iso(v.mtime), "hash": v.checksum or v.hash, "x_object_hash": v.hash,
            "x_object_uuid": v.uuid, "x_object_version": v.serial,
            "x_object_version_timestamp": f"{v.mtime:.6f}",
            "x_object_modified_by": v.modified_by}
    slo.listing_item(v, item)
    return item


async def _items(request: web.Request, t: Target, until: float | None,
                 keep: Any = None) -> list[dict[str, Any]]:
    q = request.query
    prefix = q.get("prefix", "")
    delimiter = q.get("delimiter") or None
    path = q.get("path")
    if path is not None:
        prefix = path.rstrip("/") + "/" if path else ""
        delimiter = "/"
    simple = not (delimiter or keep or reversed_listing(request) or "meta" in q)
    # Only the plain forward listing is cut in SQL; the others filter the whole range.
    objs = await request.app[META].object_list(
        t.account, t.container, prefix,
        (q.get("marker") or None) if not reversed_listing(request) else None,
        (q.get("end_marker") or None) if not reversed_listing(request) else None,
        listing_limit(request) if simple else None, until)
    match = meta_filter(q["meta"]) if q.get("meta") else None
    pairs = []
    for v in objs:
        if match is not None and not match(v):
            continue
        if keep is not None and not await keep(v):
            continue
        pairs.append((v.name, object_item(request, v)))
    if path is not None:
        # Swift's path= lists the objects directly under it, never subdir entries.
        return [it for name, it in pairs if name != prefix
                and "/" not in name[len(prefix):].rstrip("/")][: listing_limit(request)]
    return page(pairs, request, prefix, delimiter)


async def listing(request: web.Request, t: Target, headers: dict[str, str],
                  until: float | None) -> web.Response:
    """The owner's object listing (``shared`` / ``public`` keep only such objects)."""
    meta = request.app[META]
    shared, public = "shared" in request.query, "public" in request.query

    async def keep(v: ObjectVersion) -> bool:
        if shared and public:
            return any(await meta.sharing_get(t.account, t.container, v.name)) or bool(
                await meta.public_get(t.account, t.container, v.name))
        if shared:
            return any(await meta.sharing_get(t.account, t.container, v.name))
        return bool(await meta.public_get(t.account, t.container, v.name))

    items = await _items(request, t, until, keep if shared or public else None)
    return render(request, "container", t.container, "object", items, headers)


async def shared_listing(request: web.Request, t: Target) -> web.Response:
    """A non-owner sees only what is shared with them; 403 if nothing is (no existence leak)."""
    meta = request.app[META]

    async def keep(v: ObjectVersion) -> bool:
        # Sharing only: a container's ACL lists (or not: .rlistings) through handle().
        target = Target(t.account, t.container, v.name, t.user)
        return await access(request, target, acls=False) is not None

    if await meta.container_get(t.account, t.container, usage=False) is None:
        fail(403, "Forbidden")
    items = await _items(request, t, None, keep)
    if not items:
        fail(403, "Forbidden")
    for it in items:
        if "name" in it:
            r, w = await meta.sharing_get(t.account, t.container, it["name"])
            it["x_object_sharing"] = format_sharing(r, w)
    return render(request, "container", t.container, "object", items, {})
