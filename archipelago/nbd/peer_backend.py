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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from archipelago.errors import ConfigError, Locked, NotRunning, StaleHandle
from archipelago.nbd.backend import Backend, Span, VolumeSummary, summary_of
from archipelago.peers.retry import retry_blocking

T = TypeVar("T")


@dataclass
class PeerVolume:
    """A volume open in the daemon; ``handle`` is replaced if the mapper peer restarts."""

    name: str
    handle: Any  # archipelago.client.blocking.VolumeHandle
    cache: Any = None  # peer_cache.VolCache when blocks may be addressed directly
    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: Any = None  # the _Conn (daemon connection) it was opened on


@dataclass
class _Conn:
    """One connection to a daemon: its client, map cache and the volumes open on it."""

    client: Any  # archipelago.client.blocking.Client
    cache: Any  # peer_cache.PeerCache | None
    users: int = 0
    stale: bool = False  # that daemon went away: new opens use a new connection

    def alive(self) -> bool:
        """False once the daemon's registry hung up (stopped, killed or restarted)."""
        return not self.stale and bool(self.client.link.registry_alive())

    def close(self) -> None:
        """Release the map cache, the ports and the segment mapping."""
        if self.cache is not None:
            self.cache.close()
        self.client.close()


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
        self._conn: _Conn | None = None
        self._conn_lock = threading.Lock()

    def _connect(self) -> _Conn:
        """A new connection to the daemon (NotRunning if it is not started)."""
        from archipelago.client.blocking import Client

        client = Client.connect(self._dir)
        try:
            client.peer.close()
            client.peer = _pooled_client(client.link, MAX_PORTS)
            # As the daemon's child, nbdkit starts alongside the mapper peer: wait for it.
            self._retry(client.ping)
        except BaseException:
            client.close()
            raise
        cache = None
        if os.environ.get("ARCHIPELAGO_NBD_PEER_CACHE", "1") != "0":
            from archipelago.nbd.peer_cache import PeerCache

            cache = PeerCache(client)
        return _Conn(client, cache)

    def start(self) -> None:
        """Connect to the daemon (NotRunning if it is not started)."""
        self._conn = self._connect()

    def _current(self) -> _Conn:
        """The live connection; a new one once the daemon was stopped or restarted (a
        server started by ``archip nbd serve --peer`` outlives the daemon)."""
        conn = self._conn
        if conn is None:
            raise NotRunning("the NBD plugin is stopped")
        if conn.alive():
            return conn
        with self._conn_lock:
            if self._conn is conn:
                conn.stale = True
                self._conn = self._connect()  # NotRunning while no daemon runs
                print(f"archipelago nbd: reconnected to the restarted daemon of {self._dir}",
                      file=sys.stderr, flush=True)
                if conn.users == 0:
                    conn.close()
            return self._conn

    @property
    def _client(self) -> Any:
        return self._current().client

    def _retry(self, fn: Callable[[], T], wait: float = 30.0) -> T:
        """``fn()``, retried while the mapper peer is not bound (starting or restarting)."""
        return retry_blocking(fn, wait)

    def stop(self) -> None:
        """Release this process's ports (connections, hence handles, are closed by now)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def list_volumes(self, internal: bool = False) -> list[VolumeSummary]:
        """Every volume and snapshot."""
        return [summary_of(i) for i in self._retry(lambda: self._client.list(internal))]

    def info(self, name: str) -> VolumeSummary:
        """One volume's summary."""
        return summary_of(self._retry(lambda: self._client.info(name)))

    def open(self, name: str) -> Any:
        """Open in the daemon, breaking a lock only when its holder is dead."""
        conn = self._current()
        h = self._retry(lambda: self._open_handle(conn.client, name))
        cache = conn.cache.volume(name, int(h.info.block_size)) if conn.cache else None
        with self._conn_lock:
            conn.users += 1
        return PeerVolume(name, h, cache=cache, conn=conn)

    @staticmethod
    def _open_handle(client: Any, name: str) -> Any:
        try:
            return client.open(name)
        except Locked:
            if not client.info(name).lock_stale:
                raise
            return client.open(name, force=True)

    def usable(self, vol: Any) -> bool:
        """False once the daemon ``vol`` was opened on went away."""
        return bool(vol.conn.alive())

    def _io(self, vol: PeerVolume, fn: Callable[[Any], T]) -> T:
        """Run ``fn(handle)``; if the mapper peer restarted (the volume is no longer open
        there), reopen it once -- the dead peer's lock is stale -- and retry. A volume
        opened on a daemon that went away fails at once (its client reconnects)."""
        if not vol.conn.alive():
            raise NotRunning(f"the daemon serving {vol.name!r} was stopped: reconnect")
        h = vol.handle
        try:
            return fn(h)
        except StaleHandle:
            with vol.lock:
                if vol.handle is h:
                    vol.handle = self._open_handle(vol.conn.client, vol.name)
            return fn(vol.handle)

    def close(self, vol: Any) -> None:
        """Flush and close the daemon's handle."""
        conn = vol.conn
        try:
            self._close(vol)
        finally:
            with self._conn_lock:
                conn.users -= 1
                last = conn.stale and conn.users == 0
            if last:
                conn.close()

    def _close(self, vol: Any) -> None:
        cache = vol.conn.cache
        if cache is not None:
            cache.flush()
            vc = vol.cache
            if vc is not None and vc.fence is not None:
                cache.fences.forget(vc.fence[0])  # no descriptor outlives the volume
            if cache.publisher is not None:
                cache.publisher.forget(vol.name)
            count_fast(cache)  # what the map cache and the C filter served, to the metrics
        if vol.conn.alive():
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
        if vol.cache is not None and not vol.conn.stale and vol.conn.cache.pread(
                vol.cache, buf, offset):
            return
        self._io(vol, lambda h: h.readinto(offset, buf))

    def pwrite(self, vol: Any, buf: memoryview, offset: int, fua: bool) -> None:
        """Owned cached blocks: in place here; else one request (per 4 MiB), the data
        copied once into the segment."""
        if vol.cache is not None and not vol.conn.stale and vol.conn.cache.pwrite(
                vol.cache, buf, offset, fua):
            return
        self._io(vol, lambda h: h.write(offset, buf, fua=fua))

    def zero(self, vol: Any, offset: int, count: int, fua: bool) -> None:
        """Zero (whole blocks are map updates in the mapper)."""
        self._io(vol, lambda h: h.zero(offset, count, fua=fua))

    def trim(self, vol: Any, offset: int, count: int, fua: bool) -> None:
        """Trim."""
        self._io(vol, lambda h: h.trim(offset, count, fua=fua))

    def flush(self, vol: Any) -> None:
        """Flush data (ours first) and map entries; publish the fast-path counts."""
        if vol.conn.cache is not None:
            vol.conn.cache.flush()
            count_fast(vol.conn.cache)
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


_FILTER_SEEN: dict[str, int] = {}  # the C filter's counts are process-wide
_SEEN_LOCK = threading.Lock()


def count_fast(cache: Any) -> None:
    """Add what the map cache and the C filter served since the last call to the metrics
    (``archip --json daemon status`` shows the totals as ``mapper.fast_io``)."""
    from archipelago.metrics import NBD_CACHE, NBD_CFILTER

    now = [(NBD_CACHE, cache.published, "read_hit", cache.reads),
           (NBD_CACHE, cache.published, "write_hit", cache.writes),
           (NBD_CACHE, cache.published, "fill", cache.fills)]
    if cache.publisher is not None:
        r, w, m, holds = cache.publisher.stats()
        now += [(NBD_CFILTER, _FILTER_SEEN, "read_hit", r),
                (NBD_CFILTER, _FILTER_SEEN, "write_hit", w),
                (NBD_CFILTER, _FILTER_SEEN, "passed", m),
                (NBD_CFILTER, _FILTER_SEEN, "hold", holds)]
    with _SEEN_LOCK:
        for counter, seen, kind, n in now:
            if n > seen.get(kind, 0):
                counter.labels(kind).inc(n - seen.get(kind, 0))
                seen[kind] = n
