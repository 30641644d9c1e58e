"""Client-side map cache of the NBD peer backend: known blocks are read/written in this process.

Each request through the mapper peer costs two cross-process wake-ups (~40-60 µs on a
busy 2-core host) plus Python on both sides. Design §3 allows a client to cache map
entries and address the file blocker directly, as librbd computes placement itself:
the mapper peer answers ``locate`` with, per block, the object file (or a hole) and
whether the volume owns it at its current epoch; the nbdkit thread then preads (or,
for owned blocks, pwrites in place) the file itself, GIL released in the syscall.

The rules (generation checked around reads, in-place writes under the slot's shared
lock and the map's fence, flush order) are those of every direct-block path:
docs/fastpath.md, implemented in archipelago.blockaccess. Anything unusual (no file
blocker, counter moving, a file gone) returns False: the caller sends the request to
the mapper peer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from archipelago.blockaccess.coherence import GenPage, WriterLocks, slot_of, write_under_slot
from archipelago.blockaccess.objects import DirtyFiles, makes_zero_entry, read_pieces, write_pieces
from archipelago.blocker.fence import PathFences
from archipelago.errors import ArchipelagoError, Fenced, NotSupported

#: Entries asked for per locate (read-ahead around a miss); the mapper caps it at 1024.
LOCATE = 128
#: Seconds between refills of a volume whose generation keeps moving (blocks being
#: allocated or copied up: each mapper write bumps it). Meanwhile requests go to the
#: mapper -- always correct -- instead of paying a locate round trip each.
REFILL_GAP = 0.05


@dataclass
class VolCache:
    """Cached entries of one open volume: ``state`` = (generation, {block: (path, owned)})."""

    name: str
    slot: int
    block_size: int
    state: tuple[int, dict[int, tuple[str, bool]]] = (-1, {})
    lock: threading.Lock = field(default_factory=threading.Lock)
    filled_at: float = -1e9  # monotonic time of the last refill after a change
    failed: bool = False  # the last locate failed (e.g. the mapper restarting)
    fence: tuple[str, int] | None = None  # (fence file, writer generation) of its mapper


class PeerCache:
    """Map cache + direct file I/O for the volumes one nbdkit process has open."""

    def __init__(self, client: Any) -> None:
        self.client = client  # archipelago.client.blocking.Client
        self.enabled = True
        self.page: GenPage | None = None
        self.locks: WriterLocks | None = None
        self.dirty = DirtyFiles()
        self._mutex = threading.Lock()
        self.fences = PathFences()
        self.reads = self.writes = self.fills = 0  # served in place; locate round trips
        self.published: dict[str, int] = {}  # what peer_backend.count_fast already counted
        # the C filter archip-fast, when nbdkit loaded it: it gets every entry we learn
        # and serves single-block pread/pwrite of them without entering Python (cfilter.py)
        from archipelago.nbd.cfilter import Publisher

        self.publisher = Publisher.find()

    def volume(self, name: str, block_size: int) -> VolCache:
        """A cache for a newly opened volume."""
        return VolCache(name, slot_of(name), block_size)

    def _fill(self, vc: VolCache, first: int, nblocks: int) -> bool:
        """Ask the mapper for entries around blocks [first, first+nblocks)."""
        start = first - first % LOCATE
        try:
            d = self.client.ctrl("locate", name=vc.name, first=start,
                                 count=max(LOCATE, first + nblocks - start))
        except NotSupported:
            self.enabled = False  # not a file blocker: never ask again
            return False
        except ArchipelagoError:
            return False  # e.g. the mapper restarted: the mapper path reopens
        self.fills += 1
        with self._mutex:
            if self.page is None or self.page.token != d["token"] or self.page.path != d["page"]:
                self.page = GenPage(d["page"])
                self.locks = WriterLocks(d["page"])
        gen = int(d["gen"])
        f = d.get("fence")
        vc.fence = (str(f[0]), int(f[1])) if f else None
        new = {start + k: (str(p), bool(o)) for k, (p, o) in enumerate(d["entries"])}
        with vc.lock:
            g, entries = vc.state
            if g == gen:
                entries.update(new)  # dict updates are atomic for concurrent readers
            else:
                vc.state = (gen, new)
        if self.publisher is not None:
            self.publisher.publish(d["page"], vc.name, vc.slot, vc.block_size, gen, start,
                                   [(str(p), bool(o)) for p, o in d["entries"]])
            self.publisher.fence(vc.name, *(vc.fence or ("", 0)))
        return True

    def _plan(self, vc: VolCache, offset: int, n: int,
              write: bool) -> tuple[int, list[tuple[str, int, int, int]]] | None:
        """(generation, [(path, object offset, buf pos, len)]) or None: use the mapper."""
        if not self.enabled:
            return None
        page, bs = self.page, vc.block_size
        first, last = offset // bs, (offset + n - 1) // bs
        for attempt in (0, 1):
            gen = page.gen(vc.slot) if page is not None else -2
            g, entries = vc.state
            if g == gen and all(i in entries for i in range(first, last + 1)):
                break
            if attempt:
                return None
            # changed since (or the last locate failed): refill, unless that keeps happening
            if (g != gen and g >= 0) or vc.failed:
                now = time.monotonic()
                if now - vc.filled_at < REFILL_GAP:
                    return None
                vc.filled_at = now
            vc.failed = not self._fill(vc, first, last - first + 1)
            if vc.failed:
                return None
            page = self.page
        else:  # pragma: no cover - the loop always breaks or returns
            return None
        plan: list[tuple[str, int, int, int]] = []
        pos = 0
        while pos < n:
            i, o = divmod(offset + pos, bs)
            ln = min(bs - o, n - pos)
            path, owned = entries[i]
            if write and not owned:
                return None  # hole or shared block: the mapper allocates / copies up
            plan.append((path, o, pos, ln))
            pos += ln
        return gen, plan

    def pread(self, vc: VolCache, buf: memoryview, offset: int) -> bool:
        """Fill ``buf`` from cached entries; False (buf partly written): use the mapper."""
        planned = self._plan(vc, offset, len(buf), False)
        if planned is None:
            return False
        gen, plan = planned
        if not read_pieces(plan, buf):
            return False  # zeroed or removed meanwhile
        assert self.page is not None
        if self.page.gen(vc.slot) != gen:
            return False  # entries changed while we read: the mapper answers
        self.reads += 1
        return True

    def pwrite(self, vc: VolCache, buf: memoryview, offset: int, fua: bool) -> bool:
        """Write in place into owned blocks; False (nothing written): use the mapper."""
        planned = self._plan(vc, offset, len(buf), True)
        if planned is None:
            return False
        gen, plan = planned
        bs = vc.block_size
        for _, o, p, ln in plan:
            if makes_zero_entry(o, ln, bs, buf[p : p + ln]):
                return False  # a whole zero block becomes a zero entry in the mapper
        page, locks, fence = self.page, self.locks, vc.fence
        assert page is not None and locks is not None
        if fence is None:
            return False  # no fence: only the mapper writes

        def fenced_write() -> bool:
            try:
                with self.fences.hold(*fence):
                    return write_pieces(plan, buf, fua, self.dirty.add)
            except Fenced:
                return False  # the mapper path reports it

        if not write_under_slot(page, locks, vc.slot, gen, fenced_write):
            return False  # a snapshot or resize holds the volume, or entries changed
        self.writes += 1
        return True

    def flush(self) -> None:
        """fdatasync every file written in place since the last flush."""
        self.dirty.flush()

    def close(self) -> None:
        """Sync and release the page."""
        self.flush()
        if self.locks is not None:
            self.locks.close()
        self.fences.close()
