"""Database access of the compute plugin: flavors, servers and their disks (Core queries)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from archipelago.errors import AlreadyExists, InvalidArgument, NotFound
from control.compute.model import DELETED, Disk, Flavor, Server
from control.compute.tables import disks, flavors, servers


def _flavor(r: Any) -> Flavor:
    return Flavor(id=r.id, name=r.name, vcpus=r.vcpus, ram=r.ram, disk=r.disk)


async def flavor_create(conn: AsyncConnection, name: str, vcpus: int, ram: int,
                        disk: int) -> Flavor:
    """Insert a flavor (AlreadyExists for a taken name)."""
    if await conn.scalar(sa.select(flavors.c.id).where(flavors.c.name == name)) is not None:
        raise AlreadyExists(f"flavor {name!r} already exists")
    res = await conn.execute(flavors.insert().values(name=name, vcpus=vcpus, ram=ram, disk=disk,
                                                     created_at=time.time()))
    return Flavor(int(res.inserted_primary_key[0]), name, vcpus, ram, disk)


async def flavor_list(conn: AsyncConnection) -> list[Flavor]:
    """Every flavor, by id."""
    return [_flavor(r) for r in await conn.execute(sa.select(flavors).order_by(flavors.c.id))]


async def flavor_get(conn: AsyncConnection, ref: Any) -> Flavor:
    """A flavor by id or name (InvalidArgument when unknown: a bad flavorRef is a 400)."""
    ref = str(ref)
    q = sa.select(flavors).where(flavors.c.name == ref)
    if ref.isdigit():
        q = sa.select(flavors).where(sa.or_(flavors.c.id == int(ref), flavors.c.name == ref))
    r = (await conn.execute(q)).first()
    if r is None:
        raise InvalidArgument(f"flavor {ref!r} not found")
    return _flavor(r)


async def server_ids(conn: AsyncConnection, user: str | None = None,
                     statuses: tuple[str, ...] | None = None) -> list[str]:
    """Ids of servers (of ``user``; not DELETED unless asked), oldest first."""
    q = sa.select(servers.c.id).order_by(servers.c.created_at)
    if user is not None:
        q = q.where(servers.c.user_id == user)
    q = q.where(servers.c.status.in_(statuses)) if statuses else q.where(
        servers.c.status != DELETED)
    return [r.id for r in await conn.execute(q)]


async def server_get(conn: AsyncConnection, sid: str) -> Server:
    """A server with its flavor and disks (NotFound)."""
    r = (await conn.execute(sa.select(servers).where(servers.c.id == sid))).first()
    if r is None:
        raise NotFound(f"server {sid!r} not found")
    f = (await conn.execute(sa.select(flavors).where(flavors.c.id == r.flavor_id))).one()
    s = Server(id=r.id, name=r.name, user_id=r.user_id, flavor=_flavor(f), image_id=r.image_id,
               status=r.status, kernel_image=r.kernel_image, ramdisk_image=r.ramdisk_image,
               kernel_args=r.kernel_args, fault=r.fault, created_at=r.created_at,
               updated_at=r.updated_at)
    rows = await conn.execute(sa.select(disks).where(disks.c.server_id == sid)
                              .order_by(disks.c.boot_index.is_(None), disks.c.boot_index,
                                        disks.c.id))
    s.disks = [Disk(volume=d.volume, node=d.node, boot_index=d.boot_index, size=d.size,
                    source_type=d.source_type, delete_on_termination=d.delete_on_termination,
                    charged=d.charged, kernel_image=d.kernel_image,
                    ramdisk_image=d.ramdisk_image) for d in rows]
    return s


async def server_insert(conn: AsyncConnection, s: Server) -> None:
    """Insert a server and its disks."""
    await conn.execute(servers.insert().values(
        id=s.id, name=s.name, user_id=s.user_id, flavor_id=s.flavor.id, image_id=s.image_id,
        status=s.status, kernel_image=s.kernel_image, ramdisk_image=s.ramdisk_image,
        kernel_args=s.kernel_args, fault=s.fault, created_at=s.created_at,
        updated_at=s.updated_at))
    for d in s.disks:
        await disk_insert(conn, s.id, s.user_id, d)


async def disk_insert(conn: AsyncConnection, sid: str | None, user: str, d: Disk) -> None:
    """Record a volume as a disk of server ``sid`` (None: the user's, attached to nothing)."""
    row = (await conn.execute(sa.select(disks).where(disks.c.volume == d.volume))).first()
    if row is not None and row.server_id is not None and row.server_id != sid:
        raise InvalidArgument(f"volume {d.volume!r} is attached to server {row.server_id}")
    values = dict(server_id=sid, user_id=user, volume=d.volume, node=d.node,
                  boot_index=d.boot_index, size=d.size, source_type=d.source_type,
                  delete_on_termination=d.delete_on_termination, charged=d.charged,
                  kernel_image=d.kernel_image, ramdisk_image=d.ramdisk_image)
    if row is None:
        await conn.execute(disks.insert().values(**values))
    else:
        values["charged"] = row.charged or d.charged
        if d.kernel_image is None:  # re-recorded (attach, resize): the content's boot files stay
            values.update(kernel_image=row.kernel_image, ramdisk_image=row.ramdisk_image)
        await conn.execute(disks.update().where(disks.c.id == row.id).values(**values))


async def volume_owner(conn: AsyncConnection, volume: str) -> tuple[str, str | None] | None:
    """(user, server or None) of a volume compute knows, else None."""
    r = (await conn.execute(sa.select(disks.c.user_id, disks.c.server_id)
                            .where(disks.c.volume == volume))).first()
    return None if r is None else (r.user_id, r.server_id)


async def disk_detach(conn: AsyncConnection, volume: str) -> None:
    """The volume stays recorded (its owner) but belongs to no server."""
    await conn.execute(disks.update().where(disks.c.volume == volume)
                       .values(server_id=None, boot_index=None))


async def disk_forget(conn: AsyncConnection, volume: str) -> None:
    """The volume was removed."""
    await conn.execute(disks.delete().where(disks.c.volume == volume))


async def server_set(conn: AsyncConnection, sid: str, **values: Any) -> None:
    """Update columns of a server (and updated_at)."""
    await conn.execute(servers.update().where(servers.c.id == sid)
                       .values(updated_at=time.time(), **values))


async def user_disks(conn: AsyncConnection, user: str | None) -> list[Any]:
    """Rows of the volumes compute records as ``user``'s (every user's for None), by name."""
    q = sa.select(disks).order_by(disks.c.volume)
    if user is not None:
        q = q.where(disks.c.user_id == user)
    return list((await conn.execute(q)).all())


async def disk_row(conn: AsyncConnection, volume: str) -> Any:
    """The disk row of a volume compute records, or None."""
    return (await conn.execute(sa.select(disks).where(disks.c.volume == volume))).first()
