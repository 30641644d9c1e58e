"""Account routes: HEAD (usage), GET (container listing), POST (meta and groups)."""

from __future__ import annotations

from aiohttp import web

from pithos_gw import account_quota
from pithos_gw.auth import require_owner, sharing_containers
from pithos_gw.common import (
    CONFIG,
    META,
    Target,
    check_meta_totals,
    fail,
    http_date,
    int_param,
    out_name,
    out_value,
    parse_until,
    read_meta,
)
from pithos_gw.listing import iso, listing_type, page, render
from pithos_gw.meta import Account


def account_headers(acc: Account) -> dict[str, str]:
    """X-Account-* headers of an account."""
    h = {"X-Account-Container-Count": str(acc.containers),
         "X-Account-Bytes-Used": str(acc.bytes),
         "X-Account-Object-Count": str(acc.objects),
         "X-Account-Policy-Quota": "0"}
    if acc.mtime:
        h["Last-Modified"] = http_date(acc.mtime)
    for k, v in acc.meta.items():
        h[out_name(k)] = out_value(v)
    for g, members in acc.groups.items():
        h[out_name(f"X-Account-Group-{g}")] = out_value(",".join(members))
    return h


async def handle(request: web.Request, t: Target) -> web.StreamResponse:
    """Dispatch an account-level request."""
    meta = request.app[META]
    if request.method == "GET" and not t.owner:
        return await shared_listing(request, t)
    quota = account_quota.requested(request) if request.method == "POST" else {}
    if quota and not t.owner:
        # An administrator sets another account's quota, and nothing else of it.
        others = {k for k in read_meta(request, "X-Account-Meta-")
                  if k != account_quota.META_KEY}
        if others or _groups(request):
            fail(403, "Forbidden")
        await account_quota.apply(request, t.account, t.user, quota)
        return web.Response(status=204)
    require_owner(t)
    if request.method in ("HEAD", "GET"):
        acc = await meta.account_get(t.account)
        until = parse_until(request)
        if until is not None:
            # The past state: usage summed over the containers as they were then.
            past = await meta.container_list(t.account, until)
            acc.objects = sum(c.count for c in past)
            acc.bytes = sum(c.bytes for c in past)
        headers = account_headers(acc)
        await account_quota.add_headers(request, t.account, headers)
        if until is not None:
            headers["X-Account-Until-Timestamp"] = http_date(until)
        if request.method == "HEAD":
            headers["Content-Type"] = listing_type(request)
            return web.Response(status=204, headers=headers)
        return await listing(request, t, headers)
    if request.method == "POST":
        new_meta = read_meta(request, "X-Account-Meta-")
        new_meta.pop(account_quota.META_KEY, None)  # the quota is no metadata
        check_meta_totals(request, (await meta.account_get(t.account)).meta, new_meta,
                          "X-Account-Meta-")
        groups = _groups(request)
        if quota:  # 403 unless the owner is an administrator, before anything changes
            await account_quota.apply(request, t.account, t.user, quota)
        # Swift merges account meta on POST (an empty value deletes a key); kamaki sends
        # ?update for the same effect, so merging serves both. Groups change only if sent.
        await meta.account_update(t.account, new_meta, groups or None, replace=False)
        return web.Response(status=204)
    fail(405, "Method not allowed")


def _groups(request: web.Request) -> dict[str, list[str]]:
    cfg = request.app[CONFIG]
    out: dict[str, list[str]] = {}
    for k, v in request.headers.items():
        if k.lower().startswith("x-account-group-"):
            name = k[len("X-Account-Group-"):].lower()
            members = [m.strip() for m in v.split(",") if m.strip()]
            if not name or len(members) > cfg.max_group_members:
                fail(400, "Bad group")
            out[name] = members
    if len(out) > cfg.max_groups:
        fail(400, "Too many groups")
    return out


async def listing(request: web.Request, t: Target, headers: dict[str, str]) -> web.Response:
    """The containers of an account (limit, marker, end_marker, prefix, delimiter, reverse,
    format)."""
    pairs = [(c.name, {"name": c.name, "count": c.count, "bytes": c.bytes,
                       "last_modified": iso(c.mtime), "storage_policy": "default"})
             for c in await request.app[META].container_list(t.account, parse_until(request))]
    items = page(pairs, request, request.query.get("prefix", ""),
                 request.query.get("delimiter") or None)
    return render(request, "account", t.account, "container", items, headers)


async def shared_listing(request: web.Request, t: Target) -> web.Response:
    """A non-owner sees the containers holding objects shared with them; 403 if none."""
    names = await sharing_containers(request, t.user, t.account)
    marker = request.query.get("marker", "")
    limit = int_param(request, "limit", request.app[CONFIG].container_listing_limit) or 0
    items = [{"name": n} for n in names if n > marker][:limit]
    if not items:
        fail(403, "Forbidden")
    return render(request, "account", t.account, "container", items, {})
