"""Walking every map on a blocker: headers, chunks and the objects their entries name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import xxhash

from archipelago.blocker.base import Blocker
from archipelago.mapper.chunks import BATCH, load_chunk
from archipelago.mapper.format import (
    CONTENT,
    ENTRIES_PER_CHUNK,
    ENTRY_SIZE,
    OBJECT,
    Header,
    chunk_name,
    object_name_of,
)
from archipelago.mapper.header_io import load_header

EPC = ENTRIES_PER_CHUNK
ES = ENTRY_SIZE


async def headers(b: Blocker, names: Iterable[str] | None = None) -> AsyncIterator[Header]:
    """Every stored header (tombstones included); Corrupt ones raise (callers decide)."""
    if names is None:
        names = await b.list("map:")
    todo = [n for n in names if n.startswith("map:")]

    async def one(hn: str) -> Header | None:
        return await load_header(b, hn[4:])

    for i in range(0, len(todo), BATCH):
        for h in await asyncio.gather(*(one(hn) for hn in todo[i : i + BATCH])):
            if h is not None:
                yield h


def entry_names(h: Header, buf: bytes | bytearray, first: int, count: int) -> list[str]:
    """Object names of entries [first, first+count) of one chunk's raw entries."""
    out: list[str] = []
    mv = memoryview(buf)
    for j in range(first, first + count):
        kind = buf[j * ES]
        if kind == CONTENT:
            out.append(bytes(mv[j * ES + 1 : (j + 1) * ES]).hex())
        elif kind == OBJECT:
            name = object_name_of(h.prefixes, bytes(mv[j * ES + 1 : (j + 1) * ES]))
            if name is None:
                h.name_of(kind, bytes(mv[j * ES + 1 : (j + 1) * ES]))  # raises Corrupt
            else:
                out.append(name)
    return out


def prefixes_named(h: Header, buf: bytes | bytearray) -> tuple[tuple[int, str], ...]:
    """(index, prefix) of every prefix the chunk's OBJECT entries use: equal chunk bytes
    name equal objects only if these match too (clones extend the prefix table)."""
    kinds = buf[0::ES]
    if OBJECT not in kinds:
        return ()
    used = {int.from_bytes(buf[j * ES + 1 : j * ES + 5], "big")
            for j, k in enumerate(kinds) if k == OBJECT}
    return tuple((p, h.prefixes[p] if p < len(h.prefixes) else "") for p in sorted(used))


@dataclass
class Marked:
    """What the live maps reference: objects (chunks, blocks) and per-map counts."""

    refs: set[str]
    maps: int = 0
    chunks_read: int = 0
    chunks_shared: int = 0
    seen: set = field(default_factory=set)  # (chunk digest, prefixes named) walked


async def mark_one(b: Blocker, h: Header, marked: Marked,
                   seen: set | None = None) -> None:
    """Add the chunks of live map ``h`` and the objects its entries name to ``marked``.

    Clones and snapshots share chunk contents, so a chunk whose bytes (and the prefixes
    its entries name) were already walked is not decoded again: with 1,000 clones of
    one image the work is one image's entries plus 1,000 chunk reads.
    """
    seen = marked.seen if seen is None else seen
    stored = h.stored_chunks()
    n = h.nblocks
    for i in range(0, len(stored), BATCH):
        part = [c for c in stored[i : i + BATCH] if c * EPC < n]
        bufs = await asyncio.gather(*(load_chunk(b, h, c) for c in part))
        for c, buf in zip(part, bufs, strict=True):
            marked.refs.add(chunk_name(h.uid, c))
            marked.chunks_read += 1
            key = (xxhash.xxh3_128_digest(bytes(buf)), prefixes_named(h, buf))
            if key in seen:
                marked.chunks_shared += 1
                continue
            seen.add(key)
            marked.refs.update(entry_names(h, buf, 0, min(EPC, n - c * EPC)))
