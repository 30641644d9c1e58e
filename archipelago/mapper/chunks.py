"""A map's chunks in the store: load, copy and delete them; the VolumeInfo of a header."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from archipelago.blocker.base import Blocker, LockInfo
from archipelago.errors import NotFound
from archipelago.mapper.format import (
    CHUNK_BYTES,
    CHUNK_SIZE,
    Header,
    chunk_name,
    decode_chunk,
    encode_chunk,
)
from archipelago.wire import VolumeInfo

if TYPE_CHECKING:
    from archipelago.mapper.volume import Volume

#: Pieces or objects of one large request handled at once (bounds tasks and memory).
BATCH = 64


def info_of(h: Header, lock: LockInfo | None = None) -> VolumeInfo:
    """VolumeInfo of a header (and its lock holder, if known)."""
    return VolumeInfo(
        name=h.name,
        size=h.size,
        block_size=h.block_size,
        epoch=h.epoch,
        readonly=h.readonly,
        parent=h.parent,
        created=h.created,
        kind=h.kind,
        lock_owner=lock.owner if lock else None,
        lock_stale=lock.stale if lock else False,
    )


async def load_chunk(b: Blocker, h: Header, c: int) -> bytearray:
    """Entries of chunk ``c`` of a map (all zero if the chunk is not stored)."""
    if not h.has_chunk(c):
        return bytearray(CHUNK_BYTES)
    # One read: a missing or short chunk reads zero-filled and fails its checksum.
    name = chunk_name(h.uid, c)
    return decode_chunk(h.name, c, await b.read(name, 0, CHUNK_SIZE))


async def delete_quietly(b: Blocker, names: list[str]) -> None:
    """Delete objects, ignoring ones already gone (idempotent cleanup)."""

    async def one(n: str) -> None:
        try:
            await b.delete(n)
        except NotFound:
            pass

    for i in range(0, len(names), BATCH):
        await asyncio.gather(*(one(n) for n in names[i : i + BATCH]))


async def copy_chunks(
    b: Blocker,
    src: Header,
    uid: str,
    cache: Volume | None = None,
    still_there: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Copy (verified) every stored entry chunk of ``src`` to map uid ``uid``, then flush.

    On failure the copies made are deleted; a source that vanished meanwhile (removed
    by another host) gives NotFound rather than Corrupt.
    """
    done: list[str] = []

    async def one(c: int) -> None:
        dst = chunk_name(uid, c)
        buf = cache.cached(c) if cache is not None else None
        if buf is None:
            buf = await load_chunk(b, src, c)  # verified: corruption is not propagated
        await b.put(dst, encode_chunk(c, buf), fua=False)
        done.append(dst)

    stored = src.stored_chunks()
    for i in range(0, len(stored), BATCH):
        res = await asyncio.gather(*(one(c) for c in stored[i : i + BATCH]), return_exceptions=True)
        errors = [r for r in res if isinstance(r, BaseException)]
        if errors:
            await delete_quietly(b, done)
            if still_there is not None and not await still_there():
                raise NotFound(f"map {src.name!r} was removed meanwhile")
            raise errors[0]
    await b.flush()
