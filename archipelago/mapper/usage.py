"""What a map's blocks take: used (non-zero) entries, the ones it owns (written since its
last snapshot) and the ones it shares (with snapshots, clones, images), and duplicates.

Read from the map entries, through the open volume's cache when the volume is open here
(its newest entries), else from the stored chunks. No data block is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archipelago.mapper.chunks import load_chunk
from archipelago.mapper.format import (
    CONTENT,
    ENTRIES_PER_CHUNK,
    ENTRY_SIZE,
    OBJECT,
    ZERO,
    check_volume_name,
    chunks_of,
)

if TYPE_CHECKING:
    from archipelago.mapper.mapper import Mapper


async def usage(m: Mapper, name: str) -> dict[str, Any]:
    """Block counts of map ``name``: blocks, zero, content (shared by content id), objects,
    owned, distinct (different blocks among the used ones), used_bytes, block_size."""
    check_volume_name(name)
    vol = m._open.get(name)  # noqa: SLF001 -- the mapper's own package
    h = vol.header if vol is not None else await m.live(name)
    n = h.nblocks
    counts = {ZERO: 0, CONTENT: 0, OBJECT: 0}
    owned = 0
    distinct: set[bytes] = set()
    for c in range(chunks_of(n)):
        buf = vol.cached(c) if vol is not None else None
        if buf is None:
            buf = await load_chunk(m.blocker, h, c)
        for j in range(min(ENTRIES_PER_CHUNK, n - c * ENTRIES_PER_CHUNK)):
            entry = bytes(buf[j * ENTRY_SIZE:(j + 1) * ENTRY_SIZE])
            kind = entry[0]
            counts[kind] = counts.get(kind, 0) + 1
            if kind != ZERO:
                distinct.add(entry)      # kind + id: the same id is the same block
                if h.owns(kind, entry[1:]):
                    owned += 1
    used = counts[CONTENT] + counts[OBJECT]
    return {"name": h.name, "blocks": n, "zero": counts[ZERO], "content": counts[CONTENT],
            "objects": counts[OBJECT], "used": used, "owned": owned, "shared": used - owned,
            "distinct": len(distinct), "block_size": h.block_size,
            "used_bytes": used * h.block_size}
