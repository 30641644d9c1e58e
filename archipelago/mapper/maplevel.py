"""Map-level helpers of an open Volume kept apart to keep volume.py small: extents
(NBD block status from the map alone) and resize (caller holds the volume's drain)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from archipelago.mapper.chunks import delete_quietly
from archipelago.mapper.format import (
    ENTRIES_PER_CHUNK,
    ENTRY_SIZE,
    ZERO,
    blocks_of,
    chunk_name,
    chunks_of,
    encode_chunk,
)
from archipelago.wire import Extent

if TYPE_CHECKING:
    from archipelago.mapper.volume import Volume

EPC = ENTRIES_PER_CHUNK
ES = ENTRY_SIZE


async def extents(v: Volume, offset: int, size: int) -> list[Extent]:
    """Runs of holes and data covering the range (for NBD block status)."""
    h = v.header
    bs = h.block_size
    out: list[Extent] = []

    def add(start: int, end: int, zero: bool) -> None:
        start, end = max(start, offset), min(end, offset + size)
        if start >= end:
            return
        if out and out[-1].zero == zero and out[-1].offset + out[-1].length == start:
            out[-1] = Extent(out[-1].offset, end - out[-1].offset, zero)
        else:
            out.append(Extent(start, end - start, zero))

    if size == 0:
        return out
    first, last = offset // bs, (offset + size - 1) // bs
    c = first // EPC
    while c * EPC <= last:
        lo, hi = max(first, c * EPC), min(last + 1, (c + 1) * EPC)
        if not h.has_chunk(c):
            add(lo * bs, hi * bs, True)
        else:
            kinds = (await v.chunk(c))[0::ES]
            for i in range(lo, hi):
                add(i * bs, (i + 1) * bs, kinds[i - c * EPC] == ZERO)
        c += 1
    return out


async def resize_locked(v: Volume, size: int) -> None:
    """Grow (zero entries) or shrink (drop entries, delete owned blocks)."""
    h = v.header
    bs = h.block_size
    if size >= h.size:
        new = replace(h, size=size)
        await v.put_header(new)
        v.header = new
        return
    newn, oldn = blocks_of(size, bs), h.nblocks
    if size % bs:
        # Zero what the new last block holds past the end, so growing back reads zeros.
        i = newn - 1
        o = size - i * bs
        await v._write_piece(i, o, min(bs, h.size - i * bs) - o, None, True)
        h = v.header
    doomed = await v.owned_names(newn, oldn)
    dropped: list[int] = []
    bitmap = h
    for c in range(newn // EPC, chunks_of(oldn)):
        if not h.has_chunk(c):
            continue
        if c * EPC >= newn:
            dropped.append(c)
            bitmap = replace(bitmap, chunks=bitmap.with_chunk(c, False))
            continue
        buf = bytearray(await v.chunk(c))
        start = (newn - c * EPC) * ES
        buf[start:] = bytes(len(buf) - start)
        await v._w.put(chunk_name(h.uid, c), encode_chunk(c, buf), fua=True)
        v._cache[c] = buf
    new = replace(v.header, size=size, chunks=bitmap.chunks)
    await v.put_header(new)
    v.header = new
    for c in dropped:
        v._cache.pop(c, None)
    await delete_quietly(v._w, [chunk_name(h.uid, c) for c in dropped] + doomed)
