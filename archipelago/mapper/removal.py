"""Rename and remove of maps (Mapper.rename / Mapper.remove live here to keep mapper.py small).

Both fence out any earlier writer of the map first (a new writer generation, see
docs/fencing.md): a holder evicted by a lock break can then neither write into the
blocks being deleted nor put a header over the tombstone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from archipelago.blocker.base import Blocker
from archipelago.errors import AlreadyExists, Busy, Corrupt, NotSupported
from archipelago.mapper.chunks import delete_quietly, info_of
from archipelago.mapper.format import (
    check_user_name,
    chunk_name,
    tombstone,
)
from archipelago.mapper.header_io import load_header
from archipelago.mapper.volume import Volume
from archipelago.metrics import OPEN_VOLUMES
from archipelago.wire import VolumeInfo

if TYPE_CHECKING:
    from archipelago.mapper.mapper import Mapper


async def fence_out(b: Blocker, name: str) -> bool:
    """Bump the fence of volume ``name`` after its lock was broken: its evicted holder can
    no longer write. False when there is nothing to fence (no such writable map, or a
    blocker without fences)."""
    try:
        h = await load_header(b, name)
    except Corrupt:
        return False
    if h is None or h.deleted or h.readonly:
        return False
    try:
        await b.fence_bump(h.uid)
    except NotSupported:
        return False
    return True


async def rename(m: Mapper, old: str, new: str) -> VolumeInfo:
    """Rename a map that is not open (block names stay; the old name keeps a tombstone)."""
    check_user_name(old)
    check_user_name(new)
    if old == new:
        raise AlreadyExists(f"volume {new!r} already exists")
    if old in m._open:
        raise Busy(f"volume {old!r} is open: close it first")
    async with m.guard(old, new):
        h = await m.live(old)
        await m.free_name(new)
        v = Volume(m, h, writable=not h.readonly)
        if v.writable:
            await v.grant()
        # Crash-safe in three atomic steps; read_header settles a half-done rename.
        await v.put_header(replace(h, moving_to=new))
        moved = replace(h, name=new, moving_to=None)
        await v.put_header(moved)
        await v.put_header(tombstone(h))
        if v.gen is not None:
            await m.blocker.fence_forget(h.uid)
    return info_of(moved)


async def remove(m: Mapper, name: str, *, internal: bool = False) -> None:
    """Remove a map: tombstone header, delete only blocks it owns, then its chunks."""
    check_user_name(name, internal)
    async with m.guard(name):
        v = m._open.get(name)
        was_open = v is not None and not v.closed and v.writable
        if v is not None and not v.closed:
            async with v.drain.exclusive():
                v.closed = True
            del m._open[name]
            OPEN_VOLUMES.dec()
        else:
            h = await m.live(name)
            v = Volume(m, h, writable=not h.readonly)
            if v.writable:
                await v.grant()
        h = v.header
        w = v.writer
        await v.put_header(tombstone(h))
        doomed = await v.owned_names(0, h.nblocks)
        await delete_quietly(w, doomed)
        await delete_quietly(w, [chunk_name(h.uid, c) for c in h.stored_chunks()])
        if v.gen is not None:
            await m.blocker.fence_drop(h.uid)
        if was_open and name not in m._held:
            await m._release(name)
