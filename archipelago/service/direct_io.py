"""The mapper peer's direct block I/O on the file blocker (rules: docs/fastpath.md).

Through the blockers a read is copied five times (file -> bytes -> segment -> mapper
bytes -> segment -> caller). Here the mapper looks the blocks up in the map chunks it
already holds (archipelago.blockaccess.locate) and preads each object file directly
into the request's segment buffer; owned blocks are written in place from it (the
blocker peer hop cost ~2/3 of a 4 KiB write's latency). Both are planned and done
without yielding to the event loop, so no map operation of this peer interleaves:
a snapshot either has bumped the epoch already (the block is no longer owned: the
mapper copies up) or has not started (the write lands before it); while it drains the
volume, :meth:`Volume.may_write_in_place` is False and writes decline. In-place writes
are noted in :attr:`DirectIO.dirty`, synced by :meth:`DirectIO.flush` before every
volume flush, snapshot and close; FUA fdatasyncs before the reply. It also answers
clients' ``locate`` (entries for their map caches, archipelago/nbd/peer_cache.py).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from archipelago.blockaccess.coherence import GenPage, slot_of
from archipelago.blockaccess.locate import Locator
from archipelago.blockaccess.objects import DirtyFiles, read_pieces, write_pieces
from archipelago.errors import Fenced, InvalidArgument
from archipelago.mapper.format import ENTRIES_PER_CHUNK


class DirectIO:
    """Reads, in-place writes and locate answers of cached map entries on a file blocker."""

    def __init__(self, blocker: Any, writes: bool = True) -> None:
        self.blocker = blocker  # a FileBlocker: path_of, fences, fsync
        self.locator = Locator(blocker.path_of)
        self.writes_enabled = writes
        self.dirty = DirtyFiles()
        self.hits = 0  # reads served
        self.misses = 0
        self.writes = 0  # writes served in place

    def read_into(self, vol: Any, buf: memoryview, offset: int) -> bool:
        """Fill ``buf`` from ``offset`` of ``vol``; False (buf partly written): use the mapper."""
        n = len(buf)
        if vol.closed or n == 0 or offset + n > vol.header.size:
            return False
        plan = self.locator.read_plan(vol, offset, n)
        if plan is None or not read_pieces(plan, buf):
            self.misses += 1
            return False  # the mapper loads (and caches) the chunk, or answers a gone file
        self.hits += 1
        return True

    def write_from(self, vol: Any, data: memoryview, offset: int, fua: bool) -> bool:
        """Write ``data`` at ``offset`` in place if every block it touches is owned and
        cached; False (nothing written): use the mapper."""
        if not self.writes_enabled or not vol.may_write_in_place():
            return False  # e.g. a snapshot/resize/close is draining the volume
        n = len(data)
        if n == 0 or offset + n > vol.header.size:
            return False
        plan = self.locator.write_plan(vol, offset, data)  # for the whole request up front
        fence = vol.fence
        if plan is None or fence is None:
            return False  # a map update, or an unfenced writer: the mapper path
        sync = self.blocker.fsync
        try:
            with self.blocker.fences.hold(*fence):
                if not write_pieces(plan, data, fua and sync, self.dirty.add if sync else None):
                    return False
        except Fenced:
            vol.fenced = True
            return False  # the mapper path reports it
        self.writes += 1
        return True

    async def load(self, vol: Any, first: int, last: int) -> None:
        """Load the entry chunks of blocks [first, last)."""
        for c in range(first // ENTRIES_PER_CHUNK, (last - 1) // ENTRIES_PER_CHUNK + 1):
            await vol.chunk(c)

    async def locate(self, vol: Any, gens: GenPage, first: int, count: int) -> dict[str, Any]:
        """The ``locate`` answer for a client's map cache: [file or "" (a hole), owned] of
        blocks [first, first + count) (at most 1024), the generation they are valid for,
        and the fence (file, generation) its in-place writes must hold (None: none)."""
        last = min(first + max(1, min(count, 1024)), vol.header.nblocks)
        if not 0 <= first < last:
            raise InvalidArgument(f"no blocks {first}+{count} in {vol.name!r}")
        await self.load(vol, first, last)
        gen = gens.gen(slot_of(vol.name))  # then the entries, without yielding
        fence = vol.fence if self.writes_enabled else None
        return {"gen": gen, "token": gens.token, "page": gens.path,
                "block_size": vol.header.block_size,
                "entries": self.locator.entries(vol, first, last),
                "fence": None if fence is None else [self.blocker.fences.path(fence[0]), fence[1]]}

    async def flush(self) -> None:
        """fdatasync the files written in place since the last flush."""
        if len(self.dirty):
            await asyncio.to_thread(self.dirty.flush)


def make_direct_io(cfg: Any) -> DirectIO | None:
    """A DirectIO when the configured blocker is the file blocker, else None."""
    if cfg.blocker.backend != "file" or os.environ.get("ARCHIPELAGO_NO_FAST_READ") == "1":
        return None
    from archipelago.blocker.file import FileBlocker

    fb = FileBlocker(cfg.blocker.file.path, fsync=cfg.blocker.file.fsync)
    return DirectIO(fb, writes=os.environ.get("ARCHIPELAGO_NO_FAST_WRITE") != "1")


def fast_io(fast: DirectIO | None) -> dict[str, dict[str, int]]:
    """Requests served by each direct-block path (docs/fastpath.md): the mapper peer's own,
    and the daemon's nbdkit's map cache and C filter (counted at flush and close)."""
    from archipelago.metrics import totals

    cache, cf = totals("archipelago_nbd_cache_requests"), totals("archipelago_nbd_cfilter_requests")
    return {"mapper": {"reads": fast.hits if fast else 0, "writes": fast.writes if fast else 0},
            "nbd_cache": {k: int(cache.get(kind, 0)) for k, kind in
                          (("reads", "read_hit"), ("writes", "write_hit"), ("fills", "fill"))},
            "nbd_cfilter": {k: int(cf.get(kind, 0)) for k, kind in
                            (("reads", "read_hit"), ("writes", "write_hit"), ("passed", "passed"),
                             ("holds", "hold"))}}
