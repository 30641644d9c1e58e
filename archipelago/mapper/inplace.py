"""Plans for I/O that bypasses the mapper: which stored object, at which offset, serves
each piece of a byte range, from the map chunks a Volume already holds in memory.

Used by the fast paths that pread/pwrite file-blocker objects themselves (the mapper
peer's fastread and the NBD direct fast path). A plan is all or nothing: None means
"let the mapper do it" (a chunk is not cached, or a write needs a map update).
"""

from __future__ import annotations

from typing import Any

from archipelago.hashing import is_zero
from archipelago.mapper.format import ENTRIES_PER_CHUNK, ENTRY_SIZE

#: One piece: (entry = kind byte + 32-byte id, offset in the object, offset in the
#: caller's buffer, length).
Piece = tuple[bytes, int, int, int]


def cached_pieces(vol: Any, offset: int, n: int) -> list[Piece] | None:
    """Pieces of [offset, offset + n) by block, or None if a map chunk is not in memory."""
    bs = vol.header.block_size
    pieces: list[Piece] = []
    pos = 0
    while pos < n:
        i, o = divmod(offset + pos, bs)
        ln = min(bs - o, n - pos)
        chunk = vol.cached(i // ENTRIES_PER_CHUNK)
        if chunk is None:
            return None
        e = (i % ENTRIES_PER_CHUNK) * ENTRY_SIZE
        pieces.append((bytes(chunk[e : e + ENTRY_SIZE]), o, pos, ln))
        pos += ln
    return pieces


def owned_pieces(vol: Any, offset: int, data: memoryview) -> list[Piece] | None:
    """Pieces of a write that may go in place: every block owned by ``vol`` at its
    current epoch and no whole block of zeros (those become zero entries); else None."""
    pieces = cached_pieces(vol, offset, len(data))
    if pieces is None:
        return None
    h = vol.header
    bs = h.block_size
    for entry, o, pos, ln in pieces:
        if not h.owns(entry[0], entry[1:]):
            return None  # zero entry or shared block: the mapper allocates / copies up
        if o == 0 and ln >= min(bs, h.size - (offset + pos) // bs * bs) and is_zero(
            data[pos : pos + ln]
        ):
            return None
    return pieces
