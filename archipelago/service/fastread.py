"""Mapper-peer fast path for the file blocker: pread/pwrite objects straight from/to the segment.

Through the blockers a read is copied five times (file -> bytes -> segment -> mapper
bytes -> segment -> caller). Here the mapper looks the blocks up in the map chunks it
already holds and preads each object file directly into the request's segment buffer,
so data goes file -> segment -> caller. Safe for the same reasons as the NBD direct
fast path (archipelago.nbd.fastpath): in-memory chunks are replaced, never edited; an
object whose file is gone (its block was zeroed, its volume removed) makes the read
fall back to the mapper; reads racing overlapping writes are undefined for block
devices anyway. The whole read is planned and done without yielding to the event
loop, so no map operation of this peer interleaves with it.

Writes (``write_from``) go in place, from the request's segment buffer, into blocks the
volume owns at its current epoch -- what the mapper's own write would do, minus the hop
to the blocker peer (which cost ~2/3 of a 4 KiB write's latency). Safe because:
- planned and written without yielding: a snapshot either has bumped the epoch already
  (the block is no longer owned: the mapper copies up) or has not started its header
  update (the write lands before it, as if acknowledged first); while a snapshot, resize
  or close holds the volume's drain exclusively we decline outright;
- a zero entry, a shared block or a whole zero block goes to the mapper (map updates);
- durability: written files are noted dirty in this process's FileBlocker and fsynced
  by :meth:`flush`, which the mapper peer calls before every volume flush and close;
  FUA fdatasyncs before the reply.
"""

from __future__ import annotations

import os
from typing import Any

from archipelago.errors import Fenced
from archipelago.mapper.format import ENTRIES_PER_CHUNK, ENTRY_SIZE, ZERO
from archipelago.mapper.inplace import cached_pieces, owned_pieces

_ZEROS = memoryview(bytes(4 * 1024 * 1024))


class FastReader:
    """Reads of cached map entries on a file blocker (``path_of`` maps names to files)."""

    def __init__(self, path_of: Any) -> None:
        self.path_of = path_of
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.blocker: Any = None  # the FileBlocker whose dirty set ``flush`` syncs

    def read_into(self, vol: Any, buf: memoryview, offset: int) -> bool:
        """Fill ``buf`` from ``offset`` of ``vol``; False (buf partly written): use the mapper."""
        h = vol.header
        n = len(buf)
        if vol.closed or n == 0 or offset + n > h.size:
            return False
        pieces = cached_pieces(vol, offset, n)
        if pieces is None:
            self.misses += 1
            return False  # the mapper loads (and caches) the chunk
        for entry, o, p, ln in pieces:
            if entry[0] == ZERO:
                buf[p : p + ln] = _ZEROS[:ln]
                continue
            try:
                fd = os.open(self.path_of(h.name_of(entry[0], entry[1:])), os.O_RDONLY | os.O_CLOEXEC)
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


    def write_from(self, vol: Any, data: memoryview, offset: int, fua: bool) -> bool:
        """Write ``data`` at ``offset`` in place if every block it touches is owned and
        cached; False (nothing written): use the mapper."""
        fb = self.blocker
        if fb is None or vol.closed or not vol.writable or vol.fenced:
            return False
        if getattr(vol.drain, "_blocked", True):
            return False  # a snapshot/resize/close is draining the volume
        h = vol.header
        n = len(data)
        if n == 0 or offset + n > h.size:
            return False
        pieces = owned_pieces(vol, offset, data)  # decided for the whole request up front
        if pieces is None:
            return False
        plan = [(self.path_of(h.name_of(e[0], e[1:])), o, p, ln) for e, o, p, ln in pieces]
        fence, fences = vol.fence, getattr(fb, "fences", None)
        if fence is None or fences is None:
            return False  # an unfenced writer: the mapper path
        try:
            with fences.hold(*fence):
                return self._write_plan(fb, plan, data, fua)
        except Fenced:
            vol.fenced = True
            return False  # the mapper path reports it

    def _write_plan(self, fb: Any, plan: list, data: memoryview, fua: bool) -> bool:
        fds: list[int] = []
        try:
            for path, _, _, _ in plan:  # open all first: a missing one means no write at all
                fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        except FileNotFoundError:
            for fd in fds:
                os.close(fd)
            return False
        try:
            for fd, (path, o, p, ln) in zip(fds, plan, strict=True):
                done = 0
                while done < ln:
                    done += os.pwrite(fd, data[p + done : p + ln], o + done)
                if fb.fsync:
                    if fua:
                        os.fdatasync(fd)
                    else:
                        fb.note_dirty(path)
        finally:
            for fd in fds:
                os.close(fd)
        self.writes += 1
        return True

    async def load(self, vol: Any, first: int, last: int) -> None:
        """Load the entry chunks of blocks [first, last) (before :meth:`entries`)."""
        for c in range(first // ENTRIES_PER_CHUNK, (last - 1) // ENTRIES_PER_CHUNK + 1):
            await vol.chunk(c)

    def entries(self, vol: Any, first: int, last: int) -> list[list[Any]]:
        """[object file or "" (a hole), owned] of blocks [first, last) of ``vol``, for
        clients caching entries (archipelago/nbd/peer_cache.py). Synchronous: read the
        generation (mapgen.py) right before, without yielding in between."""
        h = vol.header
        # while a snapshot drains the volume nothing is owned: its blocks become shared
        writable = vol.writable and not vol.fenced and not getattr(vol.drain, "_blocked", True)
        out: list[list[Any]] = []
        for i in range(first, last):
            chunk = vol.cached(i // ENTRIES_PER_CHUNK)
            if chunk is None:
                break  # evicted meanwhile: the client asks again
            e = (i % ENTRIES_PER_CHUNK) * ENTRY_SIZE
            kind, ident = chunk[e], bytes(chunk[e + 1 : e + ENTRY_SIZE])
            if kind == ZERO:
                out.append(["", False])
            else:
                out.append([self.path_of(h.name_of(kind, ident)),
                            writable and h.owns(kind, ident)])
        return out

    async def flush(self) -> None:
        """fdatasync the files written in place since the last flush."""
        if self.blocker is not None:
            await self.blocker.flush()


def make_fast_reader(cfg: Any) -> FastReader | None:
    """A FastReader when the configured blocker is the file blocker, else None."""
    if cfg.blocker.backend != "file" or os.environ.get("ARCHIPELAGO_NO_FAST_READ") == "1":
        return None
    from archipelago.blocker.file import FileBlocker

    fb = FileBlocker(cfg.blocker.file.path, fsync=cfg.blocker.file.fsync)
    path_of = getattr(fb, "path_of", None)
    if path_of is None:
        return None
    fr = FastReader(path_of)
    if os.environ.get("ARCHIPELAGO_NO_FAST_WRITE") != "1" and hasattr(fb, "note_dirty"):
        fr.blocker = fb
    return fr


def fence_files(cfg: Any, fast: FastReader | None = None) -> Any:
    """The fence files of the configured file blocker (None for other backends); the
    fast reader's own when it has a blocker (one descriptor cache per process)."""
    if cfg.blocker.backend != "file":
        return None
    if fast is not None and fast.blocker is not None:
        return fast.blocker.fences
    from archipelago.blocker.fence import FenceFiles

    return FenceFiles(os.path.abspath(cfg.blocker.file.path))


def rados_fence(cfg: Any, run_dir: str) -> Any:
    """The mapper peer's RADOS fence (None for other backends): its own client for the
    fence objects; the writers it registers are its blocker peers (docs/fencing.md)."""
    if cfg.blocker.backend != "rados":
        return None
    from archipelago.blocker import open_blocker
    from archipelago.blocker.rados_fence import CLIENTS_DIR, PublishedAddrs, RadosFence

    return RadosFence(open_blocker(cfg), PublishedAddrs(os.path.join(run_dir, CLIENTS_DIR)),
                      blk_writes=False)
