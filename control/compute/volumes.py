"""A user's volumes (Cyclades' detachable volumes) under /compute/v2.0/os-volumes: list,
create (blank), snapshot, clone, resize, delete. Ownership is compute's disk record;
created and cloned volumes charge cyclades.disk; snapshots are read-only and free.

GET /os-volumes (with "usage": used/owned/shared/distinct blocks, dedup = used/distinct);
POST /os-volumes {"volume": {"name", "size" bytes}};
POST /os-volumes/{name}/action {"snapshot"|"clone": {"name"}} | {"resize": {"size"}};
DELETE /os-volumes/{name} (not while attached).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from archipelago.errors import Busy, InvalidArgument, NotFound
from control.compute import quota, store
from control.compute.model import Disk
from control.compute.service import (
    VOLUME_CREATED,
    VOLUME_REMOVED,
    VOLUME_RESIZED,
    ComputeService,
    volume_event,
)


def add_routes(r: web.UrlDispatcher, handler: Any) -> None:
    """The os-volumes routes (``handler`` wraps one with the service and the principal)."""
    r.add_get("/os-volumes", handler(list_volumes))
    r.add_post("/os-volumes", handler(create))
    r.add_post("/os-volumes/{name}/action", handler(action))
    r.add_delete("/os-volumes/{name}", handler(delete))


async def _owned(svc: ComputeService, who: Any, name: str) -> Any:
    """The disk row of a volume the caller owns (NotFound for others': no probing)."""
    async with svc.ctx.db.read() as conn:
        row = await store.disk_row(conn, name)
    if row is None or not (who.is_admin or row.user_id == who.uuid):
        raise NotFound(f"volume {name!r} not found")
    return row


def _size(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % 512:
        raise InvalidArgument("size must be a positive number of bytes, a multiple of 512")
    return v


async def volumes(svc: ComputeService, who: Any) -> list[dict[str, Any]]:
    """The caller's volumes with the mapper's view (size, parent, read-only)."""
    async with svc.ctx.db.read() as conn:
        rows = await store.user_disks(conn, who.uuid)
    out = []
    for r in rows:
        d: dict[str, Any] = {"name": r.volume, "server": r.server_id, "size": r.size,
                             "boot": r.boot_index == 0, "source_type": r.source_type,
                             "parent": None, "readonly": r.source_type == "snapshot",
                             "created": None}
        try:
            info = await svc.vol("info", r.volume)
            d.update(size=info.size, parent=info.parent, readonly=info.readonly,
                     created=info.created)
            u = await svc.vol("usage", r.volume)
            d["usage"] = {k: u[k] for k in ("used", "owned", "shared", "distinct", "block_size",
                                            "used_bytes")}
            d["usage"]["dedup"] = round(u["used"] / u["distinct"], 2) if u["distinct"] else 1.0
        except NotFound:
            d["missing"] = True
        out.append(d)
    return out


async def _record(svc: ComputeService, user: str, name: str, size: int, kind: str,
                  charged: bool, source: Any = None) -> None:
    """Record a new volume as the user's; a snapshot or clone of ``source`` (a disk row)
    keeps its boot files (a server booted from it needs them)."""
    boot = (source.kernel_image, source.ramdisk_image) if source is not None else (None, None)
    async with svc.ctx.db.begin() as conn:
        await store.disk_insert(conn, None, user, Disk(name, "-", None, size, kind, False, charged,
                                                       *boot))
        if charged:
            await volume_event(svc.ctx, conn, VOLUME_CREATED, user, name, size)


async def happened(svc: ComputeService, action: str, args: list[str]) -> bool:
    """Did the change of a pending ``compute volume-<action> <name> [size]`` commission
    happen (a crash between the change and the accept)? Settled at the API server's start."""
    async with svc.ctx.db.read() as conn:
        row = await store.disk_row(conn, args[0])
    if action == "volume-create":
        return row is not None
    if action == "volume-delete":
        return row is None
    if action == "volume-resize":
        return row is not None and len(args) > 1 and str(row.size) == args[1]
    return False


async def list_volumes(svc: ComputeService, who: Any, request: web.Request) -> web.Response:
    """GET /os-volumes."""
    return web.json_response({"volumes": await volumes(svc, who)})


async def create(svc: ComputeService, who: Any, request: web.Request) -> web.Response:
    """POST /os-volumes: a blank volume of ``size`` bytes (cyclades.disk charged first)."""
    from control.host.webapi import read_json

    doc = await read_json(request, {})
    b = doc.get("volume") if isinstance(doc, dict) else None
    if not isinstance(b, dict):
        raise InvalidArgument('body must be {"volume": {"name", "size"}}')
    name, size = b.get("name"), _size(b.get("size"))
    async with svc.quotas.charge(who.uuid, {quota.DISK: size}, f"compute volume-create {name}"):
        await svc.vol("create", name, size)
        await _record(svc, who.uuid, name, size, "blank", True)
    return web.json_response({"volume": {"name": name, "size": size}}, status=201)


async def action(svc: ComputeService, who: Any, request: web.Request) -> web.Response:
    """POST /os-volumes/{name}/action: snapshot, clone or resize."""
    from control.host.webapi import read_json

    row = await _owned(svc, who, request.match_info["name"])
    doc = await read_json(request, {})
    if not isinstance(doc, dict) or len(doc) != 1 or not isinstance(next(iter(doc.values())), dict):
        raise InvalidArgument("an action body has exactly one key with an object")
    (op, arg), = doc.items()
    if op == "snapshot":
        info = await svc.vol("snapshot", row.volume, arg.get("name"))
        await _record(svc, row.user_id, info.name, info.size, "snapshot", False, row)
    elif op == "clone":
        size = row.size
        new = arg.get("name")
        async with svc.quotas.charge(row.user_id, {quota.DISK: size}, f"compute volume-create {new}"):
            info = await svc.vol("clone", row.volume, new)
            await _record(svc, row.user_id, info.name, info.size, "blank", True, row)
    elif op == "resize":
        if row.server_id is not None:
            raise Busy(f"volume {row.volume!r} is attached: detach it before resizing")
        size = _size(arg.get("size"))
        delta = size - row.size if row.charged else 0
        async with svc.quotas.charge(row.user_id, {quota.DISK: delta},
                                     f"compute volume-resize {row.volume} {size}"):
            info = await svc.vol("resize", row.volume, size)
            async with svc.ctx.db.begin() as conn:
                await store.disk_insert(conn, None, row.user_id, Disk(
                    row.volume, row.node, None, info.size, row.source_type, False, row.charged))
                if row.charged:
                    await volume_event(svc.ctx, conn, VOLUME_RESIZED, row.user_id, row.volume,
                                       info.size)
    else:
        raise InvalidArgument(f"unknown volume action {op!r}")
    return web.json_response({"volume": {"name": info.name, "size": info.size}})


async def delete(svc: ComputeService, who: Any, request: web.Request) -> web.Response:
    """DELETE /os-volumes/{name} -> 204 (not while attached to a server)."""
    row = await _owned(svc, who, request.match_info["name"])
    if row.server_id is not None:
        raise Busy(f"volume {row.volume!r} is attached to server {row.server_id}")
    try:
        await svc.vol("remove", row.volume)
    except NotFound:
        pass
    async with svc.ctx.db.begin() as conn:
        await store.disk_forget(conn, row.volume)
        if row.charged:
            await volume_event(svc.ctx, conn, VOLUME_REMOVED, row.user_id, row.volume, 0)
    if row.charged:
        await svc.quotas.release(row.user_id, {quota.DISK: -row.size},
                                 f"compute volume-delete {row.volume}")
    return web.Response(status=204)
