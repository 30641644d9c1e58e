"""Coherence of direct block access with the mapper (the rules: docs/fastpath.md).

- :class:`GenPage`: per-volume generation counters in a shared page; the mapper bumps
  a volume's counter after anything that may change what a cached entry means and
  before it replies; readers check it before and after (seqlock style).
- :class:`WriterLocks` / :meth:`GenPage.exclusive`: in-place writers of other processes
  hold a shared OFD lock on the slot's byte while they check the counter and write; a
  snapshot or resize bumps, then takes the byte exclusively (waiting for writers in flight).
- :class:`Gate`: the same exclusion between the threads of one process (the direct NBD
  backend's nbdkit threads vs its map-level operations), without syscalls.
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from archipelago.blockaccess.layout import MAPGEN_HEADER, MAPGEN_SIZE, MAPGEN_SLOTS, slot_of
from archipelago.blocker.fence import ofd_lock

__all__ = ["Gate", "GenPage", "WriterLocks", "slot_of", "write_under_slot"]


def _lock(fd: int, kind: int, slot: int, wait: bool = False) -> bool:
    """Set (F_RDLCK/F_WRLCK) or clear (F_UNLCK) the OFD lock of byte ``slot``."""
    return ofd_lock(fd, kind, slot, 1, wait)


class GenPage:
    """The mapped page; ``writer`` (the mapper peer) creates it and bumps counters."""

    def __init__(self, path: str, writer: bool = False) -> None:
        self.path = path
        self.held_off = 0  # exclusive()'s lock attempts refused by writers in flight
        flags = os.O_RDWR | os.O_CREAT if writer else os.O_RDONLY
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        try:
            if writer and os.fstat(fd).st_size < MAPGEN_SIZE:
                os.ftruncate(fd, MAPGEN_SIZE)
            self._mm = mmap.mmap(fd, MAPGEN_SIZE, prot=mmap.PROT_READ | (mmap.PROT_WRITE if writer else 0))
        finally:
            os.close(fd)
        self.slots = memoryview(self._mm).cast("B")[MAPGEN_HEADER:].cast("Q")  # 8-byte loads/stores
        self._head = memoryview(self._mm).cast("B")[:MAPGEN_HEADER].cast("Q")
        if writer:
            # never unlinked or truncated: clients keep their mapping across mapper restarts;
            # a new mapper invalidates every cache (it cannot know what they hold)
            for i in range(MAPGEN_SLOTS):
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
                self.held_off += 1
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


def write_under_slot(page: GenPage, locks: WriterLocks, slot: int, gen: int,
                     write: Callable[[], bool]) -> bool:
    """``write()`` holding the slot's shared lock, if ``gen`` is still current; False (nothing
    written) if a snapshot or resize holds the slot or the generation moved."""
    fd = locks.acquire(slot)
    if fd < 0:
        return False
    try:
        return page.gen(slot) == gen and write()  # checked inside the lock: see exclusive()
    finally:
        locks.release(fd, slot)


class Gate:
    """Many in-place writers, or one map-level operation (snapshot, clone, remove, close),
    among the threads of one process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._closed = 0

    def try_shared(self) -> bool:
        """Enter as a writer unless a map-level operation runs (then: the mapper path)."""
        with self._cond:
            if self._closed:
                return False
            self._active += 1
            return True

    def leave(self) -> None:
        """Leave as a writer."""
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Keep writers out and wait for those in flight."""
        with self._cond:
            self._closed += 1
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._closed -= 1
