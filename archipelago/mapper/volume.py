"""An open volume: block I/O through the map, with copy-on-write and write-through entries.

Ordering for crash safety: a new data object is made durable before the map entry that
names it, and every entry update is an atomic, durable chunk put done before the write
is acknowledged; memory is updated last. So a map on the store only ever names objects
that exist (or zero). Owned objects that lose their entry are deleted after the update.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from archipelago.errors import Fenced, InvalidArgument, MissingBlock, NotFound, NotSupported, ReadOnly
from archipelago.hashing import is_zero
from archipelago.mapper.chunks import BATCH, delete_quietly, info_of, load_chunk
from archipelago.mapper.drain import Drain
from archipelago.mapper.format import (
    ENTRIES_PER_CHUNK,
    ENTRY_SIZE,
    OBJECT,
    ZERO,
    ZERO_ID,
    Header,
    chunk_name,
    chunks_of,
    encode_chunk,
    encode_header,
    header_name,
    lock_name,
    object_id,
)
from archipelago.metrics import COPYUPS
from archipelago.wire import Extent, VolumeInfo

if TYPE_CHECKING:
    from archipelago.blocker.base import Blocker
    from archipelago.mapper.mapper import Mapper

__all__ = ["Volume"]

EPC = ENTRIES_PER_CHUNK
ES = ENTRY_SIZE


@dataclass
class _Update:
    """One entry change waiting for its chunk put."""

    off: int
    kind: int
    ident: bytes
    done: bool = False
    error: BaseException | None = None


class Volume:
    """An open map: read/write/zero/extents; obtained from Mapper.open."""

    def __init__(self, mapper: Mapper, header: Header, writable: bool) -> None:
        self._mapper = mapper
        self._b = mapper.blocker
        self.header = header
        self.writable = writable
        self.drain = Drain()
        self.refs = 1
        self.closed = False
        self.fenced = False
        self._cache: dict[int, bytearray] = {}
        self._chunk_locks: dict[int, asyncio.Lock] = {}
        self._pending: dict[int, list[_Update]] = {}
        self._blocks: dict[int, list] = {}
        self._hdr_lock = asyncio.Lock()
        # Mutations go through _w: fenced once granted (see grant, docs/fencing.md).
        self._w = mapper.blocker
        self.gen: int | None = None
        self._seq = 0

    @property
    def info(self) -> VolumeInfo:
        """Current description (size and epoch follow resize and snapshot)."""
        return info_of(self.header)

    @property
    def name(self) -> str:
        """Volume name."""
        return self.header.name

    # -- fencing -------------------------------------------------------------

    async def grant(self) -> None:
        """Take a new writer generation (caller holds the volume lock): older writers
        of this map, e.g. one whose lock was broken, are fenced from now on."""
        uid = self.header.uid
        try:
            self.gen = await self._b.fence_bump(uid)
        except NotSupported:
            self.gen = None
        self._w = self._b.fenced(uid, self.gen)
        # Without a fence, a random tag still keeps new block names unique.
        self._tag = self.gen if self.gen is not None else secrets.randbits(63) | 1
        self._seq = 0

    @property
    def writer(self) -> Blocker:
        """The blocker as this writer mutates it (fenced once granted)."""
        return self._w

    @property
    def fence(self) -> tuple[str, int] | None:
        """(fence key, granted generation) of this writer, None if unfenced."""
        return None if self.gen is None else (self.header.uid, self.gen)

    async def put_header(self, h: Header) -> None:
        """Durably write this map's header, fenced like every other mutation."""
        await self._w.put(header_name(h.name), encode_header(h), fua=True)

    async def _new_block(self, i: int) -> tuple[str, bytes]:
        """(name, entry id) of a fresh writable block for entry ``i``: never reused."""
        if not hasattr(self, "_tag") or self._seq >= 0xFFFFFFFF:  # ungranted, or seq used up
            await self.grant()
        self._seq += 1
        h = self.header
        ident = object_id(h.own, h.epoch, i, self._tag, self._seq)
        return h.name_of(OBJECT, ident), ident

    # -- map entries -------------------------------------------------------

    def _chunk_lock(self, c: int) -> asyncio.Lock:
        return self._chunk_locks.setdefault(c, asyncio.Lock())

    async def chunk(self, c: int) -> bytearray:
        """Entries of chunk ``c``, loaded on first use."""
        buf = self._cache.get(c)
        if buf is None:
            async with self._chunk_lock(c):
                buf = self._cache.get(c)
                if buf is None:
                    buf = await load_chunk(self._b, self.header, c)
                    self._cache[c] = buf
        return buf

    def cached(self, c: int) -> bytearray | None:
        """Chunk ``c`` if it is in memory."""
        return self._cache.get(c)

    async def entry(self, i: int) -> tuple[int, bytes]:
        """(kind, id) of block ``i``."""
        buf = await self.chunk(i // EPC)
        off = (i % EPC) * ES
        return buf[off], bytes(buf[off + 1 : off + ES])

    async def _set_entry(self, i: int, kind: int, ident: bytes) -> None:
        """Durably replace one entry (one chunk put), then update memory.

        Group commit: updates queued for a chunk while its put is in flight are
        written together by the next put, so concurrent copy-ups share chunk puts.
        """
        c = i // EPC
        await self.chunk(c)
        mine = _Update((i % EPC) * ES, kind, ident)
        self._pending.setdefault(c, []).append(mine)
        async with self._chunk_lock(c):
            if not mine.done:
                await self._fence()
                batch = self._pending.pop(c, [])
                new = bytearray(self._cache[c])
                for u in batch:
                    new[u.off] = u.kind
                    new[u.off + 1 : u.off + ES] = u.ident
                try:
                    await self._w.put(chunk_name(self.header.uid, c), encode_chunk(c, new), fua=True)
                    if not self.header.has_chunk(c):
                        async with self._hdr_lock:
                            h = replace(self.header, chunks=self.header.with_chunk(c))
                            await self.put_header(h)
                            self.header = h
                except BaseException as exc:
                    for u in batch:
                        u.done, u.error = True, exc
                    raise
                self._cache[c] = new
                for u in batch:
                    u.done = True
        if mine.error is not None:
            raise mine.error

    async def _fence(self) -> None:
        """Refuse map updates once our lock was broken (another owner may be writing)."""
        held = await self._b.lock_info(lock_name(self.name))
        if held is None or held.owner != self._mapper.owner:
            self.fenced = True
        if not self.fenced and self.gen is not None:
            try:
                await self._w.check()
            except Fenced:
                self.fenced = True
        if self.fenced:
            raise Fenced(f"lock of {self.name!r} was broken: reopen the volume")

    @asynccontextmanager
    async def _block(self, i: int) -> AsyncIterator[None]:
        """Serialize operations on one block (one copy-up per shared block)."""
        slot = self._blocks.get(i)
        if slot is None:
            slot = self._blocks[i] = [asyncio.Lock(), 0]
        slot[1] += 1
        try:
            async with slot[0]:
                yield
        finally:
            slot[1] -= 1
            if slot[1] == 0:
                del self._blocks[i]

    # -- I/O -----------------------------------------------------------------

    def _check_live(self) -> None:
        if self.closed:
            raise InvalidArgument(f"volume {self.name!r} is closed")

    def _check(self, offset: int, size: int, write: bool = False) -> None:
        if self.closed:
            raise InvalidArgument(f"volume {self.name!r} is closed")
        if write and not self.writable:
            raise ReadOnly(f"volume {self.name!r} is read-only")
        if not isinstance(offset, int) or not isinstance(size, int) or offset < 0 or size < 0:
            raise InvalidArgument(f"invalid range ({offset!r}, {size!r})")
        if offset + size > self.header.size:
            raise InvalidArgument(
                f"range {offset}+{size} past the end of {self.name!r} ({self.header.size})"
            )

    def _pieces(self, offset: int, size: int) -> Iterator[tuple[int, int, int, int]]:
        """(block, offset in block, offset in request, length) of each piece."""
        bs = self.header.block_size
        pos, end = offset, offset + size
        while pos < end:
            i = pos // bs
            o = pos - i * bs
            n = min(bs - o, end - pos)
            yield i, o, pos - offset, n
            pos += n

    async def _batched(self, coros: Iterator) -> list:
        out: list = []
        batch: list = []
        for co in coros:
            batch.append(co)
            if len(batch) >= BATCH:
                out += await asyncio.gather(*batch)
                batch = []
        if batch:
            out += await asyncio.gather(*batch)
        return out

    async def read(self, offset: int, size: int) -> bytes:
        """Read bytes; holes read as zeros."""
        self._check(offset, size)
        async with self.drain.shared():
            self._check_live()
            parts = await self._batched(
                self._read_piece(i, o, n) for i, o, _, n in self._pieces(offset, size)
            )
        return b"".join(parts)

    async def _read_piece(self, i: int, o: int, n: int) -> bytes:
        kind, ident = await self.entry(i)
        while kind != ZERO:
            try:
                return await self._b.read_existing(self.header.name_of(kind, ident), o, n)
            except NotFound:
                # A concurrent zero/trim deletes the object after it replaced the entry:
                # then read the new entry. The same entry naming an absent object is a loss.
                again = await self.entry(i)
                if again == (kind, ident):
                    raise self._missing(i, kind, ident) from None
                kind, ident = again
        return bytes(n)

    def _missing(self, i: int, kind: int, ident: bytes) -> MissingBlock:
        # Replies carry 95 bytes of message: the essentials first.
        return MissingBlock(f"block {i} of volume {self.name!r} is missing from the store "
                            f"(object {self.header.name_of(kind, ident)})")

    async def write(self, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        """Write bytes (copy-up of shared blocks); with fua, durable on return."""
        mv = memoryview(data).cast("B")
        self._check(offset, len(mv), write=True)
        async with self.drain.shared():
            self._check_live()
            await self._batched(
                self._write_piece(i, o, n, mv[s : s + n], fua)
                for i, o, s, n in self._pieces(offset, len(mv))
            )

    async def zero(self, offset: int, size: int, fua: bool = False) -> None:
        """Zero a range: whole blocks become zero entries, partial blocks get zeros."""
        self._check(offset, size, write=True)
        async with self.drain.shared():
            self._check_live()
            await self._batched(
                self._write_piece(i, o, n, None, fua) for i, o, _, n in self._pieces(offset, size)
            )

    async def trim(self, offset: int, size: int) -> None:
        """Discard a range (same effect as zero)."""
        await self.zero(offset, size)

    async def _write_piece(
        self, i: int, o: int, n: int, data: memoryview | None, fua: bool
    ) -> None:
        """Write one piece of block ``i``; ``data`` None means zeros."""
        async with self._block(i):
            h = self.header
            kind, ident = await self.entry(i)
            blen = min(h.block_size, h.size - i * h.block_size)
            whole = o == 0 and n >= blen
            zeros = data is None or is_zero(data)
            if h.owns(kind, ident):
                name = h.name_of(kind, ident)
                if whole and zeros:
                    await self._set_entry(i, ZERO, ZERO_ID)
                    await delete_quietly(self._w, [name])
                else:
                    await self._w.write(name, o, bytes(n) if data is None else data, fua=fua)
                return
            if zeros and (whole or kind == ZERO):
                if kind != ZERO:
                    await self._set_entry(i, ZERO, ZERO_ID)
                return
            new, new_id = await self._new_block(i)
            payload = bytes(n) if data is None else data
            # A new object is always written whole (put/copy replace): a leftover of a
            # crashed earlier attempt under the same name can never show through.
            if whole:
                await self._w.put(new, payload, fua=True)
            elif kind == ZERO:
                await self._w.put(new, bytes(o) + bytes(payload), fua=True)
            else:
                COPYUPS.inc()
                try:
                    await self._w.copy(h.name_of(kind, ident), new)
                except NotFound:
                    raise self._missing(i, kind, ident) from None
                await self._w.write(new, o, payload, fua=True)
            await self._set_entry(i, OBJECT, new_id)

    async def flush(self) -> None:
        """Make data and map entries durable."""
        if self.closed:
            raise InvalidArgument(f"volume {self.name!r} is closed")
        await self._b.flush()
        if self.writable:
            await self._fence()  # tell the writer its acknowledged data may be overwritten

    async def extents(self, offset: int, size: int) -> list[Extent]:
        """Runs of holes and data covering the range (for NBD block status)."""
        from archipelago.mapper.maplevel import extents

        self._check(offset, size)
        return await extents(self, offset, size)

    async def close(self) -> None:
        """Flush and release the lock (the last close of a shared open)."""
        await self._mapper.close_volume(self)

    # -- map-level helpers used by Mapper (caller holds drain.exclusive) ------

    async def owned_names(self, first: int, last: int) -> list[str]:
        """Names of blocks this volume owns among entries [first, last)."""
        h = self.header
        names = []
        for c in range(first // EPC, chunks_of(last)):
            if not h.has_chunk(c):
                continue
            buf = await self.chunk(c)
            for j in range(max(first, c * EPC) - c * EPC, min(last, (c + 1) * EPC) - c * EPC):
                kind, ident = buf[j * ES], bytes(buf[j * ES + 1 : (j + 1) * ES])
                if h.owns(kind, ident):
                    names.append(h.name_of(kind, ident))
        return names

    async def resize_locked(self, size: int) -> None:
        """Grow (zero entries) or shrink (drop entries, delete owned blocks)."""
        from archipelago.mapper.maplevel import resize_locked

        await resize_locked(self, size)
