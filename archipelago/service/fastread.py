"""Mapper-peer read fast path for the file blocker: pread objects straight into the reply buffer.

Through the blockers a read is copied five times (file -> bytes -> segment -> mapper
bytes -> segment -> caller). Here the mapper looks the blocks up in the map chunks it
already holds and preads each object file directly into the request's segment buffer,
so data goes file -> segment -> caller. Safe for the same reasons as the NBD direct
fast path (archipelago.nbd.fastpath): in-memory chunks are replaced, never edited; an
object whose file is gone (its block was zeroed, its volume removed) makes the read
fall back to the mapper; reads racing overlapping writes are undefined for block
devices anyway. The whole read is planned and done without yielding to the event
loop, so no map operation of this peer interleaves with it.
"""

from __future__ import annotations

import os
from typing import Any

from archipelago.mapper.format import ENTRIES_PER_CHUNK, ENTRY_SIZE, ZERO

_ZEROS = memoryview(bytes(4 * 1024 * 1024))


class FastReader:
    """Reads of cached map entries on a file blocker (``path_of`` maps names to files)."""

    def __init__(self, path_of: Any) -> None:
        self.path_of = path_of
        self.hits = 0
        self.misses = 0

    def read_into(self, vol: Any, buf: memoryview, offset: int) -> bool:
        """Fill ``buf`` from ``offset`` of ``vol``; False (buf partly written): use the mapper."""
        h = vol.header
        n = len(buf)
        if vol.closed or n == 0 or offset + n > h.size:
            return False
        bs = h.block_size
        plan: list[tuple[str | None, int, int, int]] = []  # file, object offset, buf pos, len
        pos = 0
        while pos < n:
            i, o = divmod(offset + pos, bs)
            ln = min(bs - o, n - pos)
            chunk = vol.cached(i // ENTRIES_PER_CHUNK)
            if chunk is None:
                self.misses += 1
                return False  # the mapper loads (and caches) the chunk
            e = (i % ENTRIES_PER_CHUNK) * ENTRY_SIZE
            kind = chunk[e]
            path = None if kind == ZERO else self.path_of(
                h.name_of(kind, bytes(chunk[e + 1 : e + ENTRY_SIZE])))
            plan.append((path, o, pos, ln))
            pos += ln
        for path, o, p, ln in plan:
            if path is None:
                buf[p : p + ln] = _ZEROS[:ln]
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self.misses += 1
                return False
            try:
                got = os.preadv(fd, [buf[p : p + ln]], o)
            finally:
                os.close(fd)
            if got < ln:  # objects may be short: what is not stored reads as zeros
                buf[p + got : p + ln] = _ZEROS[: ln - got]
        self.hits += 1
        return True


def make_fast_reader(cfg: Any) -> FastReader | None:
    """A FastReader when the configured blocker is the file blocker, else None."""
    if cfg.blocker.backend != "file" or os.environ.get("ARCHIPELAGO_NO_FAST_READ") == "1":
        return None
    from archipelago.blocker.file import FileBlocker

    fb = FileBlocker(cfg.blocker.file.path, fsync=cfg.blocker.file.fsync)
    path_of = getattr(fb, "path_of", None)
    return FastReader(path_of) if path_of is not None else None
