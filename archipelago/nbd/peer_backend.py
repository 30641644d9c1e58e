"""The peer backend: every NBD callback is one request to the daemon's mapper peer.

Uses the blocking client (archipelago.client.blocking): each nbdkit worker thread
submits on its own port of the shared-memory segment and waits for the reply in C
with the GIL released, so many NBD requests are in flight at once. pread copies
once, from the segment buffer into nbdkit's buffer. Volumes stay open in the
daemon's mapper (its lock owner), so `archip volume snapshot` works on exported
volumes, and every nbdkit connection shares that one mapper state (multi-conn).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from archipelago.errors import ConfigError, Locked, NotFound, PeerDied
from archipelago.nbd.backend import Backend, Span, VolumeSummary, summary_of

T = TypeVar("T")


@dataclass
class PeerVolume:
    """A volume open in the daemon; ``handle`` is replaced if the mapper peer restarts."""

    name: str
    handle: Any  # archipelago.client.blocking.VolumeHandle
    cache: Any = None  # peer_cache.VolCache when blocks may be addressed directly
    lock: threading.Lock = field(default_factory=threading.Lock)


#: Segment ports this nbdkit uses at most (more threads wait for a free one).
MAX_PORTS = 16


def _pooled_client(link: Any, max_ports: int) -> Any:
    """A peers BlockingClient whose ports are pooled instead of bound per thread.

    nbdkit runs each Python callback between PyGILState_Ensure/Release on its own C
    threads, so the Python thread state -- and every threading.local with it -- is
    thrown away after each callback: BlockingClient's port-per-thread would open a
    new port per request and exhaust the segment. A port is borrowed per call here.
    """
    from archipelago.peers.client import BlockingClient
    from archipelago.peers.port import Port

    class PooledClient(BlockingClient):
        def __init__(self) -> None:
            super().__init__(link, spin=int(os.environ.get("ARCHIPELAGO_NBD_SPIN", "200")))
            self._free: list[Port] = []
            self._slots = threading.BoundedSemaphore(max_ports)

        def call(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102 - see base class
            self._slots.acquire()
            with self._lock:
                port = self._free.pop() if self._free else None
            if port is None:
                port = Port(self.link)
                with self._lock:
                    self._ports.append(port)
            self._local.port = port  # what the base class's _port() returns
            try:
                return super().call(*args, **kwargs)
            finally:
                self._local.port = None
                with self._lock:
                    self._free.append(port)
                self._slots.release()

    return PooledClient()


class PeerBackend(Backend):
    """Volumes served by the running daemon of the instance at ``data_dir``."""

    def __init__(self, data_dir: str | None) -> None:
        if not data_dir:
            raise ConfigError("backend=peer needs dir=DATA_DIR (the daemon's instance)")
        self._dir = data_dir
        self._client: Any = None
        self._cache: Any = None  # peer_cache.PeerCache

    def start(self) -> None:
        """Connect to the daemon (NotRunning if it is not started)."""
        from archipelago.client.blocking import Client

        self._client = Client.connect(self._dir)
        self._client.peer.close()
        self._client.peer = _pooled_client(self._client.link, MAX_PORTS)
        # As the daemon's child, nbdkit starts alongside the mapper peer: wait for it.
        self._retry(self._client.ping)
        if os.environ.get("ARCHIPELAGO_NBD_PEER_CACHE", "1") != "0":
            from archipelago.nbd.peer_cache import PeerCache

            self._cache = PeerCache(self._client)

    def _retry(self, fn: Callable[[], T], wait: float = 30.0) -> T:
        """``fn()``, retried while the mapper peer is not bound (starting or restarting)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return fn()
            except PeerDied:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Release this process's ports (connections, hence handles, are closed by now)."""
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def list_volumes(self, internal: bool = False) -> list[VolumeSummary]:
        """Every volume and snapshot."""
        return [summary_of(i) for i in self._retry(lambda: self._client.list(internal))]

    def info(self, name: str) -> VolumeSummary:
        """One volume's summary."""
        return summary_of(self._retry(lambda: self._client.info(name)))

    def open(self, name: str) -> Any:
        """Open in the daemon, breaking a lock only when its holder is dead."""
        h = self._retry(lambda: self._open_handle(name))
        cache = self._cache.volume(name, int(h.info.block_size)) if self._cache else None
        return PeerVolume(name, h, cache=cache)

    def _open_handle(self, name: str) -> Any:
        try:
            return self._client.open(name)
        except Locked:
            if not self._client.info(name).lock_stale:
                raise
            return self._client.open(name, force=True)

    def _io(self, vol: PeerVolume, fn: Callable[[Any], T]) -> T:
        """Run ``fn(handle)``; if the mapper peer restarted (the volume is no longer open
        there), reopen it once -- the dead peer's lock is stale -- and retry."""
        h = vol.handle
        try:
            return fn(h)
        except NotFound:
            with vol.lock:
                if vol.handle is h:
                    vol.handle = self._open_handle(vol.name)
            return fn(vol.handle)

    def close(self, vol: Any) -> None:
        """Flush and close the daemon's handle."""
        if self._cache is not None:
            self._cache.flush()
            vc = getattr(vol, "cache", None)
            if vc is not None and vc.fence is not None:
                self._cache.fences.forget(vc.fence[0])  # no descriptor outlives the volume
            # one line per connection in nbdkit's log: what the map cache served
            print(f"archipelago nbd: closing {vol.name}: map cache served {self._cache.hits} "
                  f"requests, {self._cache.fills} fills", file=sys.stderr, flush=True)
            if self._cache.publisher is not None:  # the C filter's counts (process-wide)
                self._cache.publisher.forget(vol.name)
                r, w, m = self._cache.publisher.stats()
                count_cfilter(r, w, m)
                print(f"archipelago nbd: archip-fast filter served {r} reads, {w} writes, "
                      f"passed {m} on", file=sys.stderr, flush=True)
        vol.handle.close()

    def size(self, vol: Any) -> int:
        """Size as of open."""
        return int(vol.handle.info.size)

    def block_size(self, vol: Any) -> int:
        """Map block size."""
        return int(vol.handle.info.block_size)

    def can_write(self, vol: Any) -> bool:
        """Writable unless the map is read-only."""
        return not vol.handle.info.readonly

    def pread(self, vol: Any, buf: memoryview, offset: int) -> None:
        """Cached blocks: pread here (peer_cache.py); else one request (per 4 MiB), one
        copy from the segment into nbdkit's buffer."""
        if vol.cache is not None and self._cache.pread(vol.cache, buf, offset):
            return
        self._io(vol, lambda h: h.readinto(offset, buf))

    def pwrite(self, vol: Any, buf: memoryview, offset: int, fua: bool) -> None:
        """Owned cached blocks: in place here; else one request (per 4 MiB), the data
        copied once into the segment."""
        if vol.cache is not None and self._cache.pwrite(vol.cache, buf, offset, fua):
            return
        self._io(vol, lambda h: h.write(offset, buf, fua=fua))

    def zero(self, vol: Any, offset: int, count: int, fua: bool) -> None:
        """Zero (whole blocks are map updates in the mapper)."""
        self._io(vol, lambda h: h.zero(offset, count, fua=fua))

    def trim(self, vol: Any, offset: int, count: int, fua: bool) -> None:
        """Trim."""
        self._io(vol, lambda h: h.trim(offset, count, fua=fua))

    def flush(self, vol: Any) -> None:
        """Flush data (ours first) and map entries."""
        if self._cache is not None:
            self._cache.flush()
            vc = getattr(vol, "cache", None)
            if vc is not None and vc.fence is not None:
                self._cache.fences.forget(vc.fence[0])  # no descriptor outlives the volume
        self._io(vol, lambda h: h.flush())

    def extents(self, vol: Any, offset: int, count: int) -> list[Span]:
        """The mapper's extents as spans."""
        exts = self._io(vol, lambda h: h.extents(offset, count))
        return [Span(e.offset, e.length, bool(e.zero)) for e in exts]

    def snapshot(self, volume: str, snap: str, internal: bool = False) -> None:
        """Snapshot in the daemon (works on volumes open there)."""
        self._client.ctrl("snapshot", volume=volume, snap=snap, internal=internal)

    def clone(self, source: str, new: str, internal: bool = False) -> None:
        """Clone in the daemon."""
        self._client.ctrl("clone", source=source, new=new, internal=internal)

    def remove(self, name: str, internal: bool = False) -> None:
        """Remove, breaking the lock only if its holder is dead."""
        try:
            self._client.ctrl("remove", name=name, internal=internal)
        except Locked:
            if not self._client.info(name).lock_stale:
                raise
            self._client.unlock(name, force=True)
            self._client.ctrl("remove", name=name, internal=internal)

    def create(self, name: str, size: int) -> None:
        """Create in the daemon."""
        self._client.create(name, size)


_SEEN = [0, 0, 0]


def count_cfilter(r: int, w: int, m: int) -> None:
    """Add the C filter's process-wide counts since the last call to the metrics."""
    from archipelago.metrics import NBD_CFILTER

    for k, (kind, now) in enumerate((("read_hit", r), ("write_hit", w), ("passed", m))):
        if now > _SEEN[k]:
            NBD_CFILTER.labels(kind).inc(now - _SEEN[k])
            _SEEN[k] = now
