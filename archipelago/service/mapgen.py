"""Map generations: how the mapper peer tells clients that cached map entries went stale.

Design §3 lets a client cache map entries and address the file blocker directly for
blocks it knows, as librbd computes placement itself. The NBD peer backend does this
(archipelago/nbd/peer_cache.py); this page keeps it coherent with the mapper:

- a small file, ``DATA_DIR/run/mapgen`` (0600), mmapped by the mapper peer (read-write)
  and by clients (read-only): a token (new per mapper start) and ``NSLOTS`` u64
  generation counters; a volume uses slot ``crc32(name) % NSLOTS`` (a collision only
  costs a needless refill);
- the mapper bumps a volume's counter after every operation that may change what a
  cached entry means -- a write or zero through the mapper (copy-up, allocation, zero
  entry, deleted object), close, snapshot, resize -- and always *before* it replies, so
  a client that checks the counter after getting an acknowledgement sees the bump;
- a client reads with the counter checked before and after (seqlock style): a change
  means the result may be stale and it asks the mapper instead;
- in-place writes by clients cannot be undone, so they also hold a shared OFD lock on
  the slot's byte of this file while they check the counter and write; the mapper
  takes that byte exclusively around a snapshot or resize (after bumping the counter,
  so new writers back off at once and it is not starved): no client write can land in
  a block the snapshot shares. A dead client's locks go with its file descriptions.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import mmap
import os
import secrets
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

NSLOTS = 4096
HEADER = 64  # token u64, then reserved
SIZE = HEADER + 8 * NSLOTS
_FLOCK = "hh4xqqi4x"  # struct flock on x86_64/aarch64 Linux


def slot_of(name: str) -> int:
    """The counter slot of volume ``name``."""
    return zlib.crc32(name.encode()) % NSLOTS


def _lock(fd: int, kind: int, slot: int, wait: bool = False) -> bool:
    """Set (F_RDLCK/F_WRLCK) or clear (F_UNLCK) the OFD lock of byte ``slot``."""
    arg = struct.pack(_FLOCK, kind, os.SEEK_SET, slot, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, arg)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


class GenPage:
    """The mapped page; ``writer`` (the mapper peer) creates it and bumps counters."""

    def __init__(self, path: str, writer: bool = False) -> None:
        self.path = path
        flags = os.O_RDWR | os.O_CREAT if writer else os.O_RDONLY
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        try:
            if writer and os.fstat(fd).st_size < SIZE:
                os.ftruncate(fd, SIZE)
            self._mm = mmap.mmap(fd, SIZE, prot=mmap.PROT_READ | (mmap.PROT_WRITE if writer else 0))
        finally:
            os.close(fd)
        self.slots = memoryview(self._mm).cast("B")[HEADER:].cast("Q")  # 8-byte loads/stores
        self._head = memoryview(self._mm).cast("B")[:HEADER].cast("Q")
        if writer:
            # never unlinked or truncated: clients keep their mapping across mapper restarts;
            # a new mapper invalidates every cache (it cannot know what they hold)
            for i in range(NSLOTS):
                self.slots[i] += 1
            self._head[0] = int.from_bytes(secrets.token_bytes(8), "little") or 1

    @property
    def token(self) -> int:
        """Changes whenever a mapper peer (re)creates the page."""
        return int(self._head[0])

    def gen(self, slot: int) -> int:
        """Current counter of ``slot``."""
        return int(self.slots[slot])

    def bump(self, name: str) -> None:
        """Invalidate what clients cached of volume ``name``."""
        s = slot_of(name)
        self.slots[s] += 1

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Bump, keep client in-place writes of ``name`` out (waiting for those in flight),
        and bump again on the way out (what the block shared with the operation changed)."""
        s = slot_of(name)
        self.slots[s] += 1
        # a file description per holder: OFD locks of one description merge, so two
        # overlapping operations (or slot collisions) must not share one
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            # writers check the counter before locking, so only those already in flight
            # hold the byte: poll briefly instead of blocking the event loop
            delay = 0.0001
            while not _lock(fd, fcntl.F_WRLCK, s):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.01)
            try:
                yield
            finally:
                self.slots[s] += 1
        finally:
            os.close(fd)  # drops the lock

    def close(self) -> None:
        """Unmap (views first)."""
        self.slots.release()
        self._head.release()
        self._mm.close()


class WriterLocks:
    """Client side: per in-place write, a file description holding a shared lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._free: list[int] = []

    def acquire(self, slot: int) -> int:
        """An fd holding the shared lock of ``slot``, or -1 (a snapshot runs: back off)."""
        try:
            fd = self._free.pop()
        except IndexError:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        if _lock(fd, fcntl.F_RDLCK, slot):
            return fd
        self._free.append(fd)
        return -1

    def release(self, fd: int, slot: int) -> None:
        """Drop the shared lock and return the fd to the pool."""
        _lock(fd, fcntl.F_UNLCK, slot)
        self._free.append(fd)  # list.append/pop are atomic under the GIL

    def close(self) -> None:
        """Close pooled fds."""
        while self._free:
            os.close(self._free.pop())
