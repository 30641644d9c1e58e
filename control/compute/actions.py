"""Server actions beyond the lifecycle: resize, attach/detach a volume, snapshot, console."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from archipelago.errors import ArchipelagoError, InvalidArgument, NotFound
from control.compute import quota, store
from control.compute.model import ACTIVE, ERROR, STOPPED, Disk, Server
from control.compute.service import VOLUME_RESIZED, ComputeService, volume_event

#: Largest console tail returned by one call.
MAX_CONSOLE = 1 << 20


async def resize(svc: ComputeService, caller: Any, sid: str, flavor_ref: Any) -> Server:
    """Change a STOPPED server's flavor (total cpu/ram charged; a bigger disk grows the boot
    volume and is charged; a smaller one keeps it)."""
    await svc.get(caller, sid)
    async with svc.lock(sid):
        s = await svc.get(caller, sid)
        svc.require(s, STOPPED, ERROR)
        new = await svc.flavor(flavor_ref)
        boot = s.boot
        grow = 0
        if boot is not None and boot.charged and new.disk * (1 << 30) > boot.size:
            grow = new.disk * (1 << 30) - boot.size
        deltas = {quota.TOTAL_CPU: new.vcpus - s.flavor.vcpus,
                  quota.TOTAL_RAM: (new.ram - s.flavor.ram) << 20, quota.DISK: grow}
        async with svc.quotas.charge(s.user_id, deltas, f"compute resize {sid} {new.id}"):
            if grow and boot is not None:
                await svc.vol("resize", boot.volume, boot.size + grow)
            async with svc.ctx.db.begin() as conn:
                await store.server_set(conn, sid, flavor_id=new.id)
                if grow and boot is not None:
                    await store.disk_insert(conn, sid, s.user_id,
                                            dataclasses.replace(boot, size=boot.size + grow))
                    await volume_event(svc.ctx, conn, VOLUME_RESIZED, s.user_id, boot.volume,
                                       boot.size + grow)
        return await svc.get(caller, sid)


def _free_node(s: Server) -> str:
    used = {d.node for d in s.disks}
    return next(f"d{i}" for i in range(64) if f"d{i}" not in used)


async def attach(svc: ComputeService, caller: Any, sid: str, volume: str) -> Disk:
    """Attach an existing writable volume; hot-plugged when the server runs."""
    await svc.get(caller, sid)
    async with svc.lock(sid):
        s = await svc.get(caller, sid)
        try:
            info = await svc.vol("info", volume)
        except (NotFound, InvalidArgument):
            raise NotFound(f"volume {volume!r} not found") from None
        async with svc.ctx.db.read() as conn:
            owner = await store.volume_owner(conn, volume)
        if owner is not None and owner[1] is not None:
            raise InvalidArgument(f"volume {volume!r} is attached to server {owner[1]}")
        if not caller.is_admin and (owner is None or owner[0] != s.user_id):
            raise NotFound(f"volume {volume!r} not found")
        if info.readonly:
            raise InvalidArgument(f"{volume!r} is a snapshot: it cannot be attached")
        if len(s.disks) >= 16:
            raise InvalidArgument(f"server {sid} has 16 disks already")
        d = Disk(volume, _free_node(s), None, info.size, "volume", False, False)
        if s.status == ACTIVE and svc.runtime.running(sid):
            from control.compute.vm import DiskSpec

            await svc.runtime.vm(sid).hotplug(DiskSpec(d.node, volume), svc.runtime.nbd_socket,
                                              svc.cfg.reconnect_delay)
        try:
            async with svc.ctx.db.begin() as conn:
                await store.disk_insert(conn, sid, s.user_id, d)
        except BaseException:
            if s.status == ACTIVE:
                with contextlib.suppress(ArchipelagoError):
                    await svc.runtime.vm(sid).unplug(d.node)
            raise
        return d


async def detach(svc: ComputeService, caller: Any, sid: str, volume: str) -> None:
    """Detach a volume (not the boot disk); unplugged from the running guest first."""
    await svc.get(caller, sid)
    async with svc.lock(sid):
        s = await svc.get(caller, sid)
        d = next((x for x in s.disks if x.volume == volume), None)
        if d is None:
            raise NotFound(f"volume {volume!r} is not attached to server {sid}")
        if d.boot_index == 0:
            raise InvalidArgument(f"volume {volume!r} is the boot disk of server {sid}")
        if svc.runtime.running(sid):
            await svc.runtime.vm(sid).unplug(d.node, timeout=svc.cfg.stop_timeout)
        async with svc.ctx.db.begin() as conn:
            await store.disk_detach(conn, volume)


async def snapshot(svc: ComputeService, caller: Any, sid: str, name: str,
                   volume: str | None = None) -> dict[str, Any]:
    """Read-only snapshot of a server's (boot) volume, also while it runs (no data copied)."""
    s = await svc.get(caller, sid)
    d = s.boot if volume is None else next((x for x in s.disks if x.volume == volume), None)
    if d is None:
        raise NotFound(f"server {sid} has no volume {volume!r}")
    # the snapshot boots as its source does: the server's -kernel/-initrd for its boot disk
    # (also for disks recorded before compute_0002), the recorded ones for another disk
    kernel, ramdisk = ((s.kernel_image, s.ramdisk_image) if d.boot_index == 0
                       else (d.kernel_image, d.ramdisk_image))
    info = await svc.vol("snapshot", d.volume, name)
    async with svc.ctx.db.begin() as conn:
        # recorded as the user's, attached to nothing: what --snapshot may boot from
        await store.disk_insert(conn, None, s.user_id, Disk(
            name, "-", None, info.size, "snapshot", False, False, kernel, ramdisk))
    return {"id": name, "name": name, "volume": d.volume, "server": sid, "size": info.size,
            "status": "AVAILABLE"}


async def console(svc: ComputeService, caller: Any, sid: str, length: int | None = None,
                  offset: int | None = None) -> tuple[bytes, int]:
    """Console bytes: the last ``length`` bytes, or from ``offset``; and the log's size."""
    s = await svc.get(caller, sid)
    path = svc.runtime.vm(s.id).console_path
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            start = offset if offset is not None else max(0, size - (length or MAX_CONSOLE))
            start = min(max(0, start), size)
            f.seek(start)
            return f.read(min(size - start, MAX_CONSOLE)), size
    except FileNotFoundError:
        return b"", 0
