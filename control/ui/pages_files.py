"""Files (Pithos+): containers and folders, upload with progress, download, versions,
sharing with a user, public links, delete. Every call goes to the gateway as the user."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
from aiohttp import web

from archipelago.errors import InvalidArgument, NotFound
from control.ui.app import backend
from control.ui.backend import path_of

#: Headers of a download passed on to the browser.
PASS_HEADERS = ("Content-Length", "Content-Type", "ETag", "Last-Modified")


def add_routes(r: web.UrlDispatcher) -> None:
    """Routes of this module."""
    r.add_get("/files", containers)
    r.add_post("/files", container_create)
    r.add_get("/files/shared", shared)
    r.add_get("/files/c/{container}", listing)
    r.add_post("/files/c/{container}/delete", container_delete)
    r.add_post("/files/c/{container}/folder", folder_create)
    r.add_put("/files/c/{container}/upload", upload)
    r.add_put("/files/c/{container}/hashmap", put_hashmap)
    r.add_post("/files/c/{container}/blocks", put_blocks)
    r.add_get("/files/c/{container}/download", download)
    r.add_get("/files/c/{container}/object", detail)
    r.add_post("/files/c/{container}/object", object_action)


def _account(request: web.Request) -> str:
    """The account a page shows: the user's own, or (?account=) one that shares with them."""
    return request.query.get("account") or request["ui_principal"].uuid


def _name(value: Any, what: str = "name") -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > 1024:
        raise InvalidArgument(f"a {what} is required (at most 1024 bytes)")
    return value


def _obj_path(account: str, container: str, name: str) -> str:
    return "/v1/" + path_of(account, container, name)


@aiohttp_jinja2.template("files.html")
async def containers(request: web.Request) -> dict[str, Any]:
    """GET /ui/files: the user's containers."""
    me = request["ui_principal"].uuid
    found = await backend(request).json(request, "GET", f"/v1/{path_of(me)}?format=json")
    return {"containers": found or []}


async def container_create(request: web.Request) -> web.StreamResponse:
    """POST /ui/files (name): a new container."""
    form = await request.post()
    name = _name(form.get("name"), "container name")
    if "/" in name:
        raise InvalidArgument("a container name cannot hold '/'")
    me = request["ui_principal"].uuid
    r = await backend(request).call(request, "PUT", "/v1/" + path_of(me, name))
    r.release()
    raise web.HTTPSeeOther("/ui/files/c/" + quote(name, safe=""))


async def container_delete(request: web.Request) -> web.StreamResponse:
    """POST /ui/files/c/{container}/delete (an empty container)."""
    me = request["ui_principal"].uuid
    r = await backend(request).call(request, "DELETE",
                                    "/v1/" + path_of(me, request.match_info["container"]))
    r.release()
    raise web.HTTPSeeOther("/ui/files")


@aiohttp_jinja2.template("shared.html")
async def shared(request: web.Request) -> dict[str, Any]:
    """GET /ui/files/shared: what other users share with me, by account and container."""
    b = backend(request)
    accounts = await b.json(request, "GET", "/v1/?format=json") or []
    out = []
    for a in accounts:
        acct = a["name"]
        try:
            owner = (await b.identity.user(acct)).name
        except NotFound:
            owner = acct
        conts = await b.json(request, "GET", f"/v1/{path_of(acct)}?format=json") or []
        out.append({"account": acct, "owner": owner, "containers": conts})
    return {"accounts": out}


@aiohttp_jinja2.template("container.html")
async def listing(request: web.Request) -> dict[str, Any]:
    """GET /ui/files/c/{container}[?prefix=][&account=]: folders and objects."""
    acct, cont = _account(request), request.match_info["container"]
    prefix = request.query.get("prefix", "")
    q = urlencode({"format": "json", "delimiter": "/", "prefix": prefix})
    items = await backend(request).json(request, "GET", f"/v1/{path_of(acct, cont)}?{q}") or []
    crumbs, acc = [], ""
    for part in [p for p in prefix.split("/") if p]:
        acc += part + "/"
        crumbs.append((part, acc))
    gw = backend(request).ctx.gateway
    owner = ""
    if acct != request["ui_principal"].uuid:
        try:
            owner = (await backend(request).identity.user(acct)).name
        except NotFound:
            owner = acct
    return {"owner": owner,"container": cont, "account": acct, "own": acct == request["ui_principal"].uuid,
            "prefix": prefix, "crumbs": crumbs, "block_size": gw.block_size if gw else 0,
            "folders": [i["subdir"] for i in items if "subdir" in i],
            # a folder's own marker object ("name/") is the folder, not a file in it
            "objects": [i for i in items if "subdir" not in i and i["name"] != prefix]}


async def folder_create(request: web.Request) -> web.StreamResponse:
    """POST /ui/files/c/{container}/folder (prefix, name): an empty marker object
    "prefix/name/" of type application/directory, listed as a folder."""
    form = await request.post()
    name = _name(form.get("name"), "folder name").strip("/")
    if not name or "/" in name:
        raise InvalidArgument("a folder name cannot be empty or hold '/'")
    prefix, cont = str(form.get("prefix", "")), request.match_info["container"]
    me = request["ui_principal"].uuid
    (await backend(request).call(request, "PUT", _obj_path(me, cont, f"{prefix}{name}/"), data=b"",
                                 headers={"Content-Type": "application/directory"})).release()
    raise web.HTTPSeeOther(f"/ui/files/c/{quote(cont, safe='')}?" + urlencode({"prefix": f"{prefix}{name}/"}))


async def upload(request: web.Request) -> web.Response:
    """PUT /ui/files/c/{container}/upload?name=: the body streams to the gateway (the
    browser shows the progress of sending it; CSRF token in X-CSRF-Token)."""
    name = _name(request.query.get("name"))
    me = request["ui_principal"].uuid
    headers = {"Content-Type": request.headers.get("Content-Type") or "application/octet-stream"}
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    r = await backend(request).call(request, "PUT",
                                    _obj_path(me, request.match_info["container"], name),
                                    headers=headers, data=request.content)
    etag = r.headers.get("ETag", "")
    r.release()
    return web.json_response({"name": name, "etag": etag}, status=201)


async def put_hashmap(request: web.Request) -> web.Response:
    """PUT /ui/files/c/{container}/hashmap?name=: the file's block hashes (JSON, hashed in
    the browser). 201: made from blocks already stored (nothing uploaded); 409: the list
    of blocks to upload first (POST .../blocks), then this again."""
    from control.host.webapi import read_json

    name = _name(request.query.get("name"))
    doc = await read_json(request, {})          # at most 1 MiB: ~13000 hashes, 50 GiB
    me = request["ui_principal"].uuid
    path = _obj_path(me, request.match_info["container"], name) + "?hashmap&format=json"
    ctype = request.headers.get("X-Object-Content-Type") or "application/octet-stream"
    r = await backend(request).call(request, "PUT", path, ok=(201, 409),
                                    data=json.dumps(doc).encode(),
                                    headers={"Content-Type": "application/json",
                                             "X-Object-Content-Type": ctype})
    try:
        body = await r.read()
        status = r.status
    finally:
        r.release()
    if status == 409:
        return web.json_response({"missing": json.loads(body)}, status=409)
    return web.json_response({"name": name}, status=201)


async def put_blocks(request: web.Request) -> web.Response:
    """POST /ui/files/c/{container}/blocks: raw blocks (whole ones, the last may be short)
    stored in the gateway; their ids."""
    me = request["ui_principal"].uuid
    headers = {"Content-Type": "application/octet-stream"}
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    got = await backend(request).json(request, "POST",
                                      "/v1/" + path_of(me, request.match_info["container"]),
                                      headers=headers, data=request.content)
    return web.json_response({"hashes": got}, status=202)


async def download(request: web.Request) -> web.StreamResponse:
    """GET /ui/files/c/{container}/download?name=[&account=][&version=]: the object's bytes."""
    name = _name(request.query.get("name"))
    path = _obj_path(_account(request), request.match_info["container"], name)
    if request.query.get("version", "").isdigit():
        path += "?version=" + request.query["version"]
    r = await backend(request).call(request, "GET", path)
    try:
        out = web.StreamResponse(headers={k: r.headers[k] for k in PASS_HEADERS if k in r.headers})
        filename = name.rsplit("/", 1)[-1]
        out.headers["Content-Disposition"] = "attachment; filename*=UTF-8''" + quote(filename, safe="")
        await out.prepare(request)
        async for chunk in r.content.iter_chunked(1 << 20):
            await out.write(chunk)
        await out.write_eof()
        return out
    finally:
        r.release()


@aiohttp_jinja2.template("object.html")
async def detail(request: web.Request) -> dict[str, Any]:
    """GET /ui/files/c/{container}/object?name=: size, versions, sharing, public link."""
    b = backend(request)
    acct, cont = _account(request), request.match_info["container"]
    name = _name(request.query.get("name"))
    path = _obj_path(acct, cont, name)
    r = await b.call(request, "HEAD", path)
    h = dict(r.headers)
    r.release()
    versions = (await b.json(request, "GET", path + "?version=list&format=json") or {}).get("versions", [])
    readers = []
    for part in h.get("X-Object-Sharing", "").split(";"):
        key, _, users = part.partition("=")
        if key.strip() == "read":
            for u in filter(None, (x.strip() for x in users.split(","))):
                try:
                    readers.append((await b.identity.user(u)).name)
                except NotFound:
                    readers.append(u)
    public = h.get("X-Object-Public", "")
    return {"container": cont, "account": acct, "name": name,
            "own": acct == request["ui_principal"].uuid, "size": h.get("Content-Length"),
            "type": h.get("Content-Type"), "modified": h.get("Last-Modified"),
            "versions": list(reversed(versions)), "readers": readers,
            "public": f"{request.scheme}://{request.host}{public}" if public else ""}


async def object_action(request: web.Request) -> web.StreamResponse:
    """POST /ui/files/c/{container}/object: name + action (delete, share, unshare, public,
    private); share/unshare take ``user`` (a user name)."""
    b = backend(request)
    form = await request.post()
    name, action = _name(form.get("name")), form.get("action")
    me, cont = request["ui_principal"].uuid, request.match_info["container"]
    path = _obj_path(me, cont, name)
    back = f"/ui/files/c/{quote(cont, safe='')}/object?" + urlencode({"name": name})
    if action == "delete":
        (await b.call(request, "DELETE", path)).release()
        folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        raise web.HTTPSeeOther(f"/ui/files/c/{quote(cont, safe='')}?" + urlencode({"prefix": folder}))
    if action in ("public", "private"):
        (await b.call(request, "POST", path, headers={
            "X-Object-Public": "true" if action == "public" else "false"})).release()
        raise web.HTTPSeeOther(back)
    if action in ("share", "unshare"):
        who = await b.identity.user(_name(form.get("user"), "user name"))
        r = await b.call(request, "HEAD", path)
        current = r.headers.get("X-Object-Sharing", "")
        r.release()
        read, write = _parse_sharing(current)
        read = [u for u in read if u != who.uuid] + ([who.uuid] if action == "share" else [])
        value = ";".join(p for p in (f"read={','.join(read)}" if read else "",
                                     f"write={','.join(write)}" if write else "") if p)
        (await b.call(request, "POST", path, headers={"X-Object-Sharing": value})).release()
        raise web.HTTPSeeOther(back)
    raise InvalidArgument(f"unknown action {action!r}")


def _parse_sharing(value: str) -> tuple[list[str], list[str]]:
    read: list[str] = []
    write: list[str] = []
    for part in value.split(";"):
        key, _, users = part.partition("=")
        names = [u.strip() for u in users.split(",") if u.strip()]
        (read if key.strip() == "read" else write if key.strip() == "write" else []).extend(names)
    return read, write
