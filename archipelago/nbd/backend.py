"""The seam between the NBD plugin and the volume service, and its "direct" backend.

The plugin (plugin.py + exports.py) holds everything NBD-specific: capabilities,
flags, extents encoding, scratch exports, refcounts, errno mapping. A backend only
moves bytes and map operations. Two implementations:

- ``DirectBackend`` (here): runs the mapper library in-process, on one asyncio
  (uvloop) loop in a background thread; nbdkit's worker threads submit coroutines
  with ``run_coroutine_threadsafe`` and block on the future (GIL released).
- ``PeerBackend`` (peer_backend.py): the same methods, each sent as one request over
  the shared-memory segment to the daemon's mapper peer.

Every method is synchronous (called from nbdkit threads) and raises
``archipelago.errors`` classes; ``vol`` is whatever ``open`` returned.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from archipelago.errors import ArchipelagoError, ConfigError, Locked

T = TypeVar("T")

#: How long a single backend call may take before the plugin reports EIO (seconds).
CALL_TIMEOUT = 300.0


@dataclass(frozen=True)
class VolumeSummary:
    """What the plugin needs to know about a volume it does not have open."""

    name: str
    size: int
    readonly: bool
    kind: str
    lock_stale: bool = False


@dataclass(frozen=True)
class Span:
    """One extent: ``zero`` means it reads as zeros and nothing is stored (a hole)."""

    offset: int
    length: int
    zero: bool


class Backend(ABC):
    """What the NBD plugin needs from the volume service (one per nbdkit process)."""

    @abstractmethod
    def start(self) -> None:
        """Start background machinery; called in nbdkit's after_fork (post-daemonize)."""

    @abstractmethod
    def stop(self) -> None:
        """Close every open volume and stop; called at nbdkit cleanup."""

    @abstractmethod
    def list_volumes(self, internal: bool = False) -> list[VolumeSummary]:
        """Every volume and snapshot of the instance (``internal``: scratch clones too)."""

    @abstractmethod
    def info(self, name: str) -> VolumeSummary:
        """One volume's summary; NotFound if absent."""

    @abstractmethod
    def open(self, name: str) -> Any:
        """Open a volume (taking its lock, breaking it only if stale); returns a handle."""

    @abstractmethod
    def close(self, vol: Any) -> None:
        """Flush and close a volume opened by ``open`` (releases the lock)."""

    def usable(self, vol: Any) -> bool:
        """False once ``vol`` cannot serve new connections (its daemon went away)."""
        return True

    @abstractmethod
    def size(self, vol: Any) -> int:
        """Exact size in bytes."""

    @abstractmethod
    def block_size(self, vol: Any) -> int:
        """The map's block size (whole blocks zero/trim as map updates)."""

    @abstractmethod
    def can_write(self, vol: Any) -> bool:
        """False for snapshots and other read-only maps."""

    @abstractmethod
    def pread(self, vol: Any, buf: memoryview, offset: int) -> None:
        """Fill all of ``buf`` from ``offset``."""

    @abstractmethod
    def pwrite(self, vol: Any, buf: memoryview, offset: int, fua: bool) -> None:
        """Write all of ``buf`` at ``offset``; durable on return if ``fua``."""

    @abstractmethod
    def zero(self, vol: Any, offset: int, count: int, fua: bool) -> None:
        """Make the range read as zeros (whole blocks become zero entries)."""

    @abstractmethod
    def trim(self, vol: Any, offset: int, count: int, fua: bool) -> None:
        """Discard the range (reads back as zeros here)."""

    @abstractmethod
    def flush(self, vol: Any) -> None:
        """Make acknowledged data and map entries durable."""

    @abstractmethod
    def extents(self, vol: Any, offset: int, count: int) -> list[Span]:
        """Ascending, contiguous spans covering at least ``offset``."""

    @abstractmethod
    def snapshot(self, volume: str, snap: str, internal: bool = False) -> None:
        """Create read-only snapshot ``snap`` of ``volume`` (``internal``: a reserved name)."""

    @abstractmethod
    def clone(self, source: str, new: str, internal: bool = False) -> None:
        """Create writable ``new`` from read-only ``source`` (COW, no data copy)."""

    @abstractmethod
    def remove(self, name: str, internal: bool = False) -> None:
        """Remove a volume or snapshot (breaking a stale lock of a dead holder)."""

    @abstractmethod
    def create(self, name: str, size: int) -> None:
        """Create an empty volume (used by the ``create=`` config key)."""


def summary_of(info: Any) -> VolumeSummary:
    """A mapper VolumeInfo as the plugin's VolumeSummary."""
    return VolumeSummary(
        name=info.name,
        size=info.size,
        readonly=info.readonly,
        kind=info.kind,
        lock_stale=bool(getattr(info, "lock_stale", False)),
    )


class DirectBackend(Backend):
    """The mapper library on a private uvloop loop in one background thread."""

    def __init__(self, make_blocker: Callable[[], Any], fast_read: bool = True) -> None:
        self._make_blocker = make_blocker
        self._want_fast = fast_read
        self._fast: Any = None  # fastpath.FastPath when the blocker allows it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._mapper: Any = None
        self._blocker: Any = None

    # -- loop plumbing -------------------------------------------------------

    def start(self) -> None:
        """Create the loop thread, the blocker and the mapper (owner = this pid)."""
        if self._loop is not None:
            return
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # uvloop is a dependency; plain asyncio still works
            loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="archipelago-nbd-loop", daemon=True)
        self._thread.start()
        ready.wait()
        self._call(self._make_mapper())

    async def _make_mapper(self) -> None:
        from archipelago.blocker.base import make_owner
        from archipelago.mapper import Mapper

        self._blocker = self._make_blocker()
        self._mapper = Mapper(self._blocker, make_owner("nbd"))
        if self._want_fast:
            from archipelago.nbd.fastpath import FastPath

            fast = FastPath(self._blocker)
            self._fast = fast if fast.enabled else None

    def stop(self) -> None:
        """Close the mapper (flushes, releases locks) and stop the loop thread."""
        if self._loop is None:
            return
        try:
            if self._mapper is not None:
                with self._exclusive():
                    self._call(self._mapper.close())
                self._call(self._blocker.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop = None

    def _exclusive(self) -> Any:
        """Map-level operations wait for in-flight fast writes (see fastpath.py)."""
        return self._fast.gate.exclusive() if self._fast is not None else nullcontext()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = CALL_TIMEOUT) -> T:
        """Run ``coro`` on the loop thread and wait for it (GIL released while waiting)."""
        if self._loop is None:
            coro.close()
            raise ArchipelagoError("NBD backend not started")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    # -- namespace -----------------------------------------------------------

    def list_volumes(self, internal: bool = False) -> list[VolumeSummary]:
        """Every volume and snapshot."""
        return [summary_of(i) for i in self._call(self._mapper.list(internal))]

    def info(self, name: str) -> VolumeSummary:
        """One volume's summary."""
        return summary_of(self._call(self._mapper.info(name)))

    def open(self, name: str) -> Any:
        """Open, breaking the lock only when its holder is a dead process on this host."""
        return self._call(self._open(name))

    async def _open(self, name: str) -> Any:
        try:
            return await self._mapper.open(name)
        except Locked:
            info = await self._mapper.info(name)
            if not getattr(info, "lock_stale", False):
                raise
            return await self._mapper.open(name, force=True)

    def close(self, vol: Any) -> None:
        """Flush and close."""
        with self._exclusive():
            self._call(vol.close())

    def snapshot(self, volume: str, snap: str, internal: bool = False) -> None:
        """Snapshot via the mapper."""
        with self._exclusive():
            self._call(self._mapper.snapshot(volume, snap, internal=internal))

    def clone(self, source: str, new: str, internal: bool = False) -> None:
        """Clone via the mapper."""
        with self._exclusive():
            self._call(self._mapper.clone(source, new, internal=internal))

    def remove(self, name: str, internal: bool = False) -> None:
        """Remove via the mapper, breaking the lock only if its holder is dead."""
        with self._exclusive():
            self._call(self._remove(name, internal))

    async def _remove(self, name: str, internal: bool) -> None:
        try:
            await self._mapper.remove(name, internal=internal)
        except Locked:
            info = await self._mapper.info(name)
            if not getattr(info, "lock_stale", False):
                raise
            await self._mapper.unlock(name, force=True)
            await self._mapper.remove(name, internal=internal)

    def create(self, name: str, size: int) -> None:
        """Create via the mapper."""
        self._call(self._mapper.create(name, size))

    # -- per-volume I/O --------------------------------------------------------

    def size(self, vol: Any) -> int:
        """Current size."""
        return int(vol.info.size)

    def block_size(self, vol: Any) -> int:
        """Map block size."""
        return int(vol.info.block_size)

    def can_write(self, vol: Any) -> bool:
        """Writable unless the map is read-only."""
        return not vol.info.readonly

    def pread(self, vol: Any, buf: memoryview, offset: int) -> None:
        """Known blocks: pread in this thread (fastpath.py); else the mapper, one copy."""
        if self._fast is not None and self._fast.pread(vol, buf, offset):
            return
        data = self._call(vol.read(offset, len(buf)))
        buf[:] = data

    def pwrite(self, vol: Any, buf: memoryview, offset: int, fua: bool) -> None:
        """Owned blocks: in place in this thread; else the mapper (we wait: no copy)."""
        if self._fast is not None and self._fast.pwrite(vol, buf, offset, fua):
            return
        # No timeout: the coroutine reads nbdkit's buffer, which is freed once we return;
        # and a write that landed after we reported failure could overwrite a retry.
        self._call(vol.write(offset, buf, fua=fua), timeout=None)

    def zero(self, vol: Any, offset: int, count: int, fua: bool) -> None:
        """Zero via the mapper (map update for whole blocks)."""
        self._call(vol.zero(offset, count, fua=fua))

    def trim(self, vol: Any, offset: int, count: int, fua: bool) -> None:
        """Trim, then flush if FUA asked (the mapper's trim has no fua flag)."""
        self._call(self._trim(vol, offset, count, fua))

    async def _trim(self, vol: Any, offset: int, count: int, fua: bool) -> None:
        await vol.trim(offset, count)
        if fua:
            await vol.flush()

    def flush(self, vol: Any) -> None:
        """Flush the volume."""
        self._call(vol.flush())

    def extents(self, vol: Any, offset: int, count: int) -> list[Span]:
        """The mapper's extents as spans."""
        exts = self._call(vol.extents(offset, count))
        return [Span(e.offset, e.length, bool(e.zero)) for e in exts]


def make_backend(kind: str, make_blocker: Callable[[], Any], fastpath: bool = True,
                 data_dir: str | None = None) -> Backend:
    """Build the backend named by the plugin's ``backend=`` key."""
    if kind == "direct":
        return DirectBackend(make_blocker, fastpath)
    if kind == "peer":
        from archipelago.nbd.peer_backend import PeerBackend

        return PeerBackend(data_dir)
    raise ConfigError(f"unknown NBD backend {kind!r} (direct or peer)")
