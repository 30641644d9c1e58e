"""Swift's bulk delete: POST /v1/ACCOUNT?bulk-delete with one URL-encoded
``/container[/object]`` per line; the reply sums up what was deleted (JSON when asked
for with Accept or ?format=json, else Swift's plain text)."""

from __future__ import annotations

import json
from urllib.parse import unquote

from aiohttp import web

from archipelago.errors import ArchipelagoError
from pithos_gw import acl
from pithos_gw.common import META, HttpError, Target, fail, timed, want_format

MAX_DELETES = 10000
_MAX_BODY = MAX_DELETES * 2048


async def _lines(request: web.Request) -> list[str]:
    data = bytearray()
    while chunk := await timed(request, request.content.readany()):
        data += chunk
        if len(data) > _MAX_BODY:
            fail(413, "Too many deletes in one request")
    out = [unquote(ln.strip()) for ln in data.decode(errors="replace").splitlines()]
    out = [ln for ln in out if ln]
    if len(out) > MAX_DELETES:
        fail(413, f"Maximum Bulk Deletes: {MAX_DELETES} per request")
    return out


async def _delete_one(request: web.Request, t: Target, path: str) -> str:
    """"deleted", "missing", or an error status line."""
    meta = request.app[META]
    cont, _, name = path.lstrip("/").partition("/")
    if not cont:
        return "400 Bad Request"
    target = Target(t.account, cont, name, t.user)
    if not name:
        if not t.owner:
            return "403 Forbidden"
        if await meta.container_get(t.account, cont, usage=False) is None:
            return "missing"
        try:
            await meta.container_delete(t.account, cont)
        except ArchipelagoError as e:
            return f"{e.http_status} {'Conflict' if e.http_status == 409 else 'Error'}"
        return "deleted"
    if not t.owner and not await acl.may_write(request, target):
        return "403 Forbidden"
    if await meta.object_get(t.account, cont, name) is None:
        return "missing"
    await meta.object_delete(t.account, cont, name)
    return "deleted"


async def bulk_delete(request: web.Request, t: Target) -> web.Response:
    """POST ?bulk-delete (or DELETE ?bulk-delete) on an account."""
    deleted = missing = 0
    errors: list[list[str]] = []
    for path in await _lines(request):
        try:
            got = await _delete_one(request, t, path)
        except HttpError as e:
            got = f"{e.status} Error"
        if got == "deleted":
            deleted += 1
        elif got == "missing":
            missing += 1
        else:
            errors.append([path, got])
    status = "400 Bad Request" if errors else "200 OK"
    doc = {"Number Deleted": deleted, "Number Not Found": missing, "Errors": errors,
           "Response Status": status, "Response Body": ""}
    if want_format(request) == "json":
        return web.Response(body=json.dumps(doc).encode(), content_type="application/json")
    text = "".join(f"{k}: {v}\n" for k, v in doc.items() if k != "Errors")
    text += "Errors:\n" + "".join(f"{p}, {why}\n" for p, why in errors)
    return web.Response(text=text, content_type="text/plain")
