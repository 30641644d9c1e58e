"""Writer fencing: a per-map generation that refuses the writes of an evicted holder.

Every writable grant of a map (an open, a map-level operation under the volume lock)
bumps the map's fence generation; the writer keeps the generation it was granted and
every mutation it makes (write, put, copy, delete of blocks, chunks and the header)
is checked against the current generation *in the same step* as the mutation. So a
holder whose lock was broken (force, or a stale-lock break while it was stopped) gets
:class:`Fenced` (ESTALE) on its next write or flush and never lands a byte after the
new holder's open. See docs/fencing.md.

File backend: ``fences/<key>`` holds the generation (u64 at offset 0). A writer holds
a shared OFD lock on one byte of it (``LOCK_BASE + thread id``: OFD locks of one file
description merge per byte, so each thread uses its own) while it checks the
generation and does the syscall; a bump takes the whole file exclusively, so it waits
for writes in flight and no write checked against the old generation lands after it.
The C filter (native/nbdkit_filter_archip.c) follows the same protocol.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from archipelago.errors import Busy, Fenced

if TYPE_CHECKING:
    from archipelago.blocker.base import Blocker

#: Offset of the per-thread lock bytes (past the generation; locks may lie past EOF).
LOCK_BASE = 1 << 16
#: How long a bump waits for a writer in the middle of a syscall (a stopped process).
BUMP_TIMEOUT = 30.0
_FLOCK = "hh4xqqi4x"  # struct flock on x86_64/aarch64 Linux
_GEN = struct.Struct("<Q")


def ofd_lock(fd: int, kind: int, start: int, length: int, wait: bool) -> bool:
    """Set (F_RDLCK/F_WRLCK) or clear (F_UNLCK) an OFD lock on [start, start + length);
    False if a conflicting lock is held and ``wait`` is not set."""
    arg = struct.pack(_FLOCK, kind, os.SEEK_SET, start, length, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, arg)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def fenced_message(key: str) -> str:
    """The one-line error of a fenced writer."""
    return f"map {key}: this writer was fenced (its lock was taken over): reopen the volume"


@contextlib.contextmanager
def _hold(fd: int, gen: int, key: str) -> Iterator[None]:
    byte = LOCK_BASE + threading.get_native_id()
    ofd_lock(fd, fcntl.F_RDLCK, byte, 1, wait=True)
    try:
        if _GEN.unpack(os.pread(fd, 8, 0).ljust(8, b"\0"))[0] != gen:
            raise Fenced(fenced_message(key))
        yield
    finally:
        ofd_lock(fd, fcntl.F_UNLCK, byte, 1, wait=False)


class PathFences:
    """Fence holds by fence-file path, for clients writing in place (peer_cache.py)."""

    def __init__(self) -> None:
        self._fds: dict[str, list[int]] = {}  # path -> [fd, holds in flight, forgotten]
        self._mu = threading.Lock()

    @contextlib.contextmanager
    def hold(self, path: str, gen: int) -> Iterator[None]:
        """As FenceFiles.hold, for the fence file ``path``."""
        with self._mu:
            slot = self._fds.get(path)
            if slot is None:
                slot = self._fds[path] = [os.open(path, os.O_RDONLY | os.O_CLOEXEC), 0, 0]
            slot[1] += 1
        try:
            with _hold(slot[0], gen, os.path.basename(path)):
                yield
        finally:
            with self._mu:
                slot[1] -= 1
                if slot[1] == 0 and slot[2]:
                    os.close(slot[0])

    def forget(self, path: str) -> None:
        """Close the descriptor of ``path`` once no hold uses it (its volume was closed)."""
        with self._mu:
            slot = self._fds.pop(path, None)
            if slot is not None:
                slot[2] = 1
                if slot[1] == 0:
                    os.close(slot[0])

    def close(self) -> None:
        """Close cached descriptors (no hold may be in flight)."""
        with self._mu:
            slots, self._fds = list(self._fds.values()), {}
        for slot in slots:
            os.close(slot[0])


class FenceFiles:
    """The fence generations of a file blocker, one small file per map uid.

    Descriptors are cached per key while the map is in use and closed by
    :meth:`forget` (its volume was closed here) once no hold uses them any more:
    closing a descriptor drops its locks, so it must never happen under a hold.
    """

    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "fences")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._slots: dict[str, list] = {}  # key -> [fd, holders, forgotten]
        self._mu = threading.Lock()

    def path(self, key: str) -> str:
        """File of fence ``key`` (for the C filter)."""
        return os.path.join(self.dir, key)

    def acquire(self, key: str) -> list:
        """The descriptor slot of ``key``, pinned until :meth:`release`."""
        with self._mu:
            slot = self._slots.get(key)
            if slot is None:
                fd = os.open(self.path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                slot = self._slots[key] = [fd, 0, False]
            slot[1] += 1
            return slot

    def release(self, slot: list) -> None:
        """Unpin a slot (closing it if it was forgotten meanwhile)."""
        with self._mu:
            slot[1] -= 1
            if slot[1] == 0 and slot[2]:
                os.close(slot[0])

    def bump(self, key: str, timeout: float = BUMP_TIMEOUT) -> int:
        """Next generation of ``key`` (durable), once no older-generation write is in flight."""
        # A description of its own: our own readers' locks must conflict with it.
        fd = os.open(self.path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            with self._mu:  # bumps in this process: one at a time (read-modify-write)
                gen = _GEN.unpack(os.pread(fd, 8, 0).ljust(8, b"\0"))[0] + 1
                # Two phases: publish the new generation first, so writers checking from
                # now on are refused and a busy writer cannot starve us; then wait until
                # the writers that passed their check before it have finished.
                os.pwrite(fd, _GEN.pack(gen), 0)
                os.fsync(fd)
            deadline = time.monotonic() + timeout
            # Polling, not F_OFD_SETLKW: a writer stopped mid-syscall must not hang us.
            while not ofd_lock(fd, fcntl.F_WRLCK, 0, 0, wait=False):
                if time.monotonic() >= deadline:
                    raise Busy(f"map {key}: a fenced writer is stuck in the middle of a "
                               "write (stopped process?): kill it or retry")
                time.sleep(0.01)
            return gen
        finally:
            os.close(fd)  # drops the lock

    def current(self, key: str) -> int:
        """The generation of ``key`` now (0: never granted)."""
        slot = self.acquire(key)
        try:
            return _GEN.unpack(os.pread(slot[0], 8, 0).ljust(8, b"\0"))[0]
        finally:
            self.release(slot)

    @contextlib.contextmanager
    def hold(self, key: str, gen: int) -> Iterator[None]:
        """Run the body only while ``gen`` is current (Fenced otherwise); blocks bumps."""
        slot = self.acquire(key)
        try:
            with _hold(slot[0], gen, key):
                yield
        finally:
            self.release(slot)

    def call(self, key: str, gen: int, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` under :meth:`hold` (runs in the caller's thread)."""
        with self.hold(key, gen):
            return fn(*args)

    def forget(self, key: str) -> None:
        """Close the descriptor of ``key`` once unused (its volume was closed here)."""
        with self._mu:
            slot = self._slots.pop(key, None)
            if slot is not None:
                slot[2] = True
                if slot[1] == 0:
                    os.close(slot[0])

    def drop(self, key: str) -> None:
        """Forget fence ``key`` and remove its file (its map was removed for good)."""
        self.forget(key)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))

    def close(self) -> None:
        """Close cached descriptors (no hold may be in flight)."""
        with self._mu:
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            if slot[1] == 0:
                os.close(slot[0])


class FencedView:
    """The mutations of one writer of map ``key`` at generation ``gen``; reads pass through.

    Each mutation calls ``blocker.fenced_op(key, gen, op, *args)``, which the backend
    implements atomically with respect to :meth:`Blocker.fence_bump`.
    """

    def __init__(self, blocker: Blocker, key: str, gen: int) -> None:
        self.inner = blocker
        self.key = key
        self.gen = gen

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)  # reads, size, list, locks: unfenced

    async def write(self, name: str, offset: int, data: Any, fua: bool = False) -> None:
        """Fenced write."""
        await self.inner.fenced_op(self.key, self.gen, "write", name, offset, data, fua)

    async def put(self, name: str, data: Any, fua: bool = True) -> None:
        """Fenced put."""
        await self.inner.fenced_op(self.key, self.gen, "put", name, data, fua)

    async def copy(self, src: str, dst: str, fua: bool = False) -> None:
        """Fenced copy."""
        await self.inner.fenced_op(self.key, self.gen, "copy", src, dst, fua)

    async def delete(self, name: str) -> None:
        """Fenced delete."""
        await self.inner.fenced_op(self.key, self.gen, "delete", name)

    async def check(self) -> None:
        """Fenced unless ``gen`` is still current."""
        await self.inner.fence_check(self.key, self.gen)
