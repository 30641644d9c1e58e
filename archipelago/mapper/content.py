"""Content-addressed maps: hash a read-only map, export and import Pithos hashmaps.

Only maps with 4 MiB blocks can be content-addressed: a Pithos block is 4 MiB.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from archipelago.errors import AlreadyExists, Corrupt, InvalidArgument, NotFound
from archipelago.hashing import ZERO_HASH, merkle_root
from archipelago.mapper.chunks import BATCH, info_of, load_chunk
from archipelago.mapper.format import (
    CHUNK_BYTES,
    CONTENT,
    ENTRIES_PER_CHUNK,
    ENTRY_SIZE,
    F_READONLY,
    OBJECT,
    PITHOS_BLOCK_SIZE,
    ZERO,
    Header,
    blocks_of,
    check_hex,
    check_size,
    check_user_name,
    check_volume_name,
    chunk_name,
    chunks_of,
    encode_chunk,
    new_uid,
)
from archipelago.wire import VolumeInfo

if TYPE_CHECKING:
    from archipelago.mapper.mapper import Mapper

EPC = ENTRIES_PER_CHUNK
ES = ENTRY_SIZE


def _need_pithos_blocks(h: Header) -> None:
    if h.block_size != PITHOS_BLOCK_SIZE:
        raise InvalidArgument(
            f"{h.name!r} has {h.block_size}-byte blocks; content addressing needs 4 MiB"
        )


async def leaves(m: Mapper, h: Header, store: bool) -> list[str]:
    """Pithos block hashes of every entry; ``store`` hashes owned-style blocks too."""
    b = m.blocker
    out: list[str] = []
    pending: list[tuple[int, str]] = []
    n = h.nblocks
    for c in range(chunks_of(n)):
        buf = await load_chunk(b, h, c)
        for j in range(min(EPC, n - c * EPC)):
            kind = buf[j * ES]
            if kind == ZERO:
                out.append(ZERO_HASH)
            elif kind == CONTENT:
                out.append(bytes(buf[j * ES + 1 : (j + 1) * ES]).hex())
            elif not store:
                raise InvalidArgument(f"{h.name!r} is not content-addressed: hash it first")
            else:
                pending.append((len(out), h.name_of(OBJECT, bytes(buf[j * ES + 1 : (j + 1) * ES]))))
                out.append("")

    async def one(pos: int, name: str) -> None:
        try:
            out[pos] = await b.hash(name)
        except NotFound:
            raise Corrupt(f"map {h.name!r} names a missing object {name!r}") from None

    for i in range(0, len(pending), BATCH):
        await asyncio.gather(*(one(p, nm) for p, nm in pending[i : i + BATCH]))
    return out


async def write_content_map(
    m: Mapper,
    name: str,
    hashes: list[str],
    size: int,
    readonly: bool,
    kind: str,
    parent: str | None,
    prev: Header | None,
) -> Header:
    """Store chunks of content entries, then the header (caller holds the name guard)."""
    b = m.blocker
    uid = new_uid()
    bitmap = Header(name=name, size=size, block_size=PITHOS_BLOCK_SIZE, epoch=0)
    for c in range(chunks_of(len(hashes))):
        buf = bytearray(CHUNK_BYTES)
        used = False
        for j, hx in enumerate(hashes[c * EPC : (c + 1) * EPC]):
            if hx != ZERO_HASH:
                buf[j * ES] = CONTENT
                buf[j * ES + 1 : (j + 1) * ES] = bytes.fromhex(hx)
                used = True
        if used:
            await b.put(chunk_name(uid, c), encode_chunk(c, buf), fua=False)
            bitmap.chunks = bitmap.with_chunk(c)
    await b.flush()
    h = Header(
        name=name,
        size=size,
        block_size=PITHOS_BLOCK_SIZE,
        epoch=prev.epoch + 1 if prev is not None else 1,
        flags=F_READONLY if readonly else 0,
        kind=kind,
        parent=parent,
        created=time.time(),
        uid=uid,
        prefixes=[] if readonly else [f"{name}+{uid}"],
        own=-1 if readonly else 0,
        chunks=bitmap.chunks,
    )
    await m.put_header(h)
    return h


async def hash_map(m: Mapper, snap: str) -> VolumeInfo:
    """Content-addressed read-only copy of a read-only map, named by its Merkle root."""
    check_volume_name(snap)
    async with m.guard(snap, only=()):
        src = await m.live(snap)
        if not src.readonly:
            raise InvalidArgument(f"{snap!r} is writable: snapshot it and hash the snapshot")
        _need_pithos_blocks(src)
        hashes = await leaves(m, src, store=True)
    root = merkle_root(hashes)
    async with m.guard(root):
        prev = await m.read_header(root)
        if prev is not None and not prev.deleted:
            if prev.readonly and prev.kind in ("hashed", "pithos") and prev.size == src.size:
                return info_of(prev)  # same content already hashed: deduplicated
            raise AlreadyExists(f"volume {root!r} already exists")
        h = await write_content_map(m, root, hashes, src.size, True, "hashed", snap, prev)
    return info_of(h)


async def hashmap(m: Mapper, name: str) -> tuple[list[str], int]:
    """(block hashes, bytes) of a content-addressed map (one zero hash for 0 bytes)."""
    h = await m.live(name)
    _need_pithos_blocks(h)
    hashes = await leaves(m, h, store=False)
    return (hashes or [ZERO_HASH]), h.size


async def clone_hashmap(
    m: Mapper,
    new: str,
    hashes: list[str],
    nbytes: int,
    size: int | None,
    readonly: bool,
) -> VolumeInfo:
    """Map over a Pithos hashmap whose blocks are stored in the blocker."""
    check_user_name(new)
    check_size(nbytes)
    if not isinstance(hashes, list):
        raise InvalidArgument("hashes must be a list of hex SHA-256 names")
    for hx in hashes:
        check_hex(hx)
    n = blocks_of(nbytes, PITHOS_BLOCK_SIZE)
    if nbytes == 0:
        if len(hashes) > 1 or any(hx != ZERO_HASH for hx in hashes):
            raise InvalidArgument("a 0-byte object has at most the zero hash")
        hashes = []
    elif len(hashes) != n:
        raise InvalidArgument(f"{nbytes} bytes need {n} block hashes, got {len(hashes)}")
    total = nbytes if size is None else check_size(size)
    if total < nbytes:
        raise InvalidArgument(f"size {total} is smaller than the object ({nbytes})")
    if readonly and total != nbytes:
        raise InvalidArgument("a read-only map of a hashmap has the object's size")
    wanted = sorted({hx for hx in hashes if hx != ZERO_HASH})
    missing: list[str] = []
    for i in range(0, len(wanted), BATCH):
        part = wanted[i : i + BATCH]
        found = await asyncio.gather(*(m.blocker.touch(hx) for hx in part))  # young for GC
        missing += [hx for hx, ok in zip(part, found, strict=True) if not ok]
    if missing:
        raise NotFound(f"{len(missing)} block(s) missing, first {missing[0]}")
    async with m.guard(new):
        prev = await m.free_name(new)
        kind = "pithos" if readonly else "volume"
        h = await write_content_map(m, new, hashes, total, readonly, kind, None, prev)
    return info_of(h)
