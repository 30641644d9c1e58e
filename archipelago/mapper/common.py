"""Records and helpers shared by the mapper modules: VolumeInfo, Extent, Drain, chunk I/O."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
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

if TYPE_CHECKING:
    from archipelago.mapper.volume import Volume

#: Pieces or objects of one large request handled at once (bounds tasks and memory).
BATCH = 64


@dataclass(frozen=True)
class VolumeInfo:
    """What `archip info` shows about a map."""

    name: str
    size: int
    block_size: int
    epoch: int
    readonly: bool
    parent: str | None
    created: float
    kind: str
    lock_owner: str | None = None
    lock_stale: bool = False

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)


@dataclass(frozen=True)
class Extent:
    """A run of the volume that is either a hole (zero) or stored data."""

    offset: int
    length: int
    zero: bool


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


class Drain:
    """Shared entry for I/O, exclusive entry that waits for in-flight I/O to finish."""

    def __init__(self) -> None:
        self._n = 0
        self._blocked = False
        self._cond = asyncio.Condition()
        self._excl = asyncio.Lock()

    @property
    def draining(self) -> bool:
        """True while an exclusive operation waits for or holds the volume."""
        return self._blocked

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Run one I/O (waits while an exclusive operation runs)."""
        async with self._cond:
            await self._cond.wait_for(lambda: not self._blocked)
            self._n += 1
        try:
            yield
        finally:
            async with self._cond:
                self._n -= 1
                self._cond.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Block new I/O and wait until in-flight I/O is done."""
        async with self._excl:
            async with self._cond:
                self._blocked = True
                await self._cond.wait_for(lambda: self._n == 0)
            try:
                yield
            finally:
                async with self._cond:
                    self._blocked = False
                    self._cond.notify_all()


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
