"""RADOS blocker: the contract on a Ceph pool and namespace, through python3-rados.

Data operations use librados' asynchronous calls; their completion callbacks run
in librados threads and hand results to the event loop with call_soon_threadsafe.
Calls without an asynchronous form (connect, listing, locks) run in a thread.
Every operation is bounded by ``timeout`` (rados_osd_op_timeout and friends), so an
unreachable cluster gives TimedOut/BackendUnavailable instead of a hang.

Locks are RADOS exclusive locks (cls_lock) named "archipelago" on a per-lock object
"lock/<name>" ("/" is not allowed in object names, so no collision); the cookie is
the owner string, so lock_info reports the owner, and the same owner string on
another client instance re-takes its lock by breaking and re-taking it.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Any

from archipelago.blocker.base import Blocker, check_name, check_range
from archipelago.blocker.rados_age import RadosAgeMixin
from archipelago.blocker.rados_aio import (
    Budget,
    client_conf,
    compound_write,
    errno_of,
    map_error,
    pool_is_full,
    settle,
)
from archipelago.blocker.rados_direct import DirectIO, direct_io, direct_read, direct_write, usable
from archipelago.blocker.rados_fence import FENCE_PREFIX, RadosFenceMixin
from archipelago.blocker.rados_locks import LOCK_PREFIX, LockHandle, RadosCallError, RadosLocksMixin
from archipelago.errors import ArchipelagoError, BackendUnavailable, ConfigError, NoSpace, NotFound
from archipelago.hashing import ZERO_HASH, block_hash, is_zero

#: copy() moves at most this much per step (bounded memory for big objects).
COPY_CHUNK = 8 * 1024 * 1024


class RadosBlocker(RadosLocksMixin, RadosAgeMixin, RadosFenceMixin, Blocker):
    """Objects in one RADOS pool and namespace; locks via the RADOS lock API."""

    kind = "rados"

    def __init__(
        self,
        conffile: str,
        pool: str = "archipelago",
        namespace: str = "",
        timeout: float = 30.0,
        keyring: str | None = None,
        rados_id: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ConfigError("rados timeout must be positive")
        self.conffile = str(conffile)
        self.pool = pool
        self.namespace = namespace
        self.timeout = float(timeout)
        self.keyring = keyring
        self.rados_id = rados_id
        self._cluster: Any = None
        self._io: Any = None
        self._locks: LockHandle | None = None
        self._open_lock = asyncio.Lock()
        self._budget: Budget | None = None
        self._direct: DirectIO | None = None  # zero-copy data path (rados_direct)
        #: Called when the cluster says this client is blocklisted (a blocker peer exits).
        self.on_blocklisted: Callable[[], None] | None = None

    # -- connection -------------------------------------------------------------------

    def _conf(self) -> dict[str, str]:
        return client_conf(self.timeout, self.keyring)

    def _where(self) -> str:
        return f"Ceph cluster ({self.conffile}, pool {self.pool!r})"

    def _connect_sync(self) -> tuple[Any, Any]:
        try:
            import rados
        except ImportError as e:
            raise ConfigError("python3-rados is not installed (apt-get install python3-rados)") from e
        try:
            cluster = rados.Rados(conffile=self.conffile, rados_id=self.rados_id, conf=self._conf())
        except rados.Error as e:
            raise ConfigError(f"cannot load Ceph config {self.conffile}: {e}") from e
        try:
            cluster.connect(timeout=max(1, round(self.timeout)))
        except rados.Error as e:
            cluster.shutdown()
            raise BackendUnavailable(
                f"cannot connect to the {self._where()} within {self.timeout:g}s: {e}") from e
        try:
            if not cluster.pool_exists(self.pool):
                raise NotFound(f"Ceph pool {self.pool!r} does not exist")
            io = cluster.open_ioctx(self.pool)
            io.set_namespace(self.namespace)
            # FULL_TRY: on a full pool, growing writes fail at once with ENOSPC (NoSpace)
            # instead of pausing until the timeout, and deletes still go through.
            io.set_osdmap_full_try()
        except rados.Error as e:
            cluster.shutdown()
            raise self._map(errno_of(e), "open pool") from e
        except BaseException:
            cluster.shutdown()
            raise
        return cluster, io

    async def open(self) -> None:
        """Connect now (otherwise the first operation connects)."""
        await self._ioctx()

    async def _ioctx(self) -> Any:
        if self._io is not None:
            return self._io
        async with self._open_lock:
            if self._io is None:
                loop = asyncio.get_running_loop()
                self._cluster, self._io = await loop.run_in_executor(None, self._connect_sync)
                self._direct = direct_io(self._cluster, self._io, self._io.get_pool_id(),
                                         self.namespace)
                self._budget = Budget()
        return self._io

    async def _lock_handle(self) -> LockHandle:
        await self._ioctx()
        if self._locks is None:
            async with self._open_lock:
                if self._locks is None:
                    self._locks = await self._thread(
                        "connect", LockHandle, self.conffile, self.pool, self.namespace,
                        self._conf(), self.rados_id)
        return self._locks

    async def close(self) -> None:
        """Wait for pending writes and disconnect (locks stay until unlocked or broken)."""
        cluster, io, locks = self._cluster, self._io, self._locks
        self._cluster = self._io = self._locks = None
        if cluster is None:
            return

        def _shutdown() -> None:
            try:
                io.aio_flush()
                io.close()
                self._close_gc_io()
            finally:
                if locks is not None:
                    locks.close()
                cluster.shutdown()

        await asyncio.get_running_loop().run_in_executor(None, _shutdown)

    # -- error mapping and the aio bridge ---------------------------------------------

    def _map(self, err: int, what: str) -> ArchipelagoError:
        """Turn a librados errno into the archipelago error class."""
        if err == errno.ESHUTDOWN and self.on_blocklisted is not None:
            self.on_blocklisted()  # this client instance is dead for good (rados_fence)
        return map_error(err, what, self.conffile, self.pool, self.timeout, self._where())

    async def _write_error(self, err: int, what: str) -> ArchipelagoError:
        """Map a failed write; a timeout on a full cluster is NoSpace (full pools pause writes)."""
        if err == errno.ETIMEDOUT and self._cluster is not None:
            try:
                if await self._thread("check fullness", pool_is_full, self._cluster, self.pool):
                    return NoSpace(f"{what}: the Ceph pool {self.pool!r} is full")
            except ArchipelagoError:
                pass  # the timeout stands
        return self._map(err, what)

    async def _thread(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking librados call in a thread, with mapped errors."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(None, fn, *args), self.timeout * 2 + 5)
        except ArchipelagoError:
            raise
        except TimeoutError:
            raise self._map(errno.ETIMEDOUT, what) from None
        except Exception as e:  # rados.Error and RadosCallError carry an errno
            if type(e).__module__ != "rados" and not isinstance(e, RadosCallError):
                raise
            raise self._map(errno_of(e), what) from e

    async def _aio(self, what: str, nbytes: int, start: Callable[[Any, Callable[..., None]], Any]
                   ) -> tuple[int, tuple[Any, ...]]:
        """Start an aio call and await (return value, callback args) without blocking."""
        io = await self._ioctx()
        assert self._budget is not None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, tuple[Any, ...]]] = loop.create_future()

        def oncomplete(completion: Any, *args: Any) -> None:
            # Runs in a librados finisher thread: only hand the result over.
            try:
                loop.call_soon_threadsafe(settle, fut, (completion.get_return_value(), args))
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

        await self._budget.acquire(nbytes)
        try:
            try:
                start(io, oncomplete)
            except Exception as e:
                if type(e).__module__ != "rados":
                    raise
                raise self._map(errno_of(e), what) from e
            try:
                # librados enforces the timeout; this guard only catches a lost callback.
                return await asyncio.wait_for(fut, self.timeout * 2 + 5)
            except TimeoutError:
                raise self._map(errno.ETIMEDOUT, what) from None
        finally:
            await self._budget.release(nbytes)

    # -- data -------------------------------------------------------------------------

    async def _read(self, name: str, offset: int, size: int, must_exist: bool = False) -> bytes:
        if size == 0:
            if must_exist and not await self.exists(name):
                raise NotFound(f"object {name!r} not found")
            return b""
        rv, args = await self._aio(
            f"read {name}", size,
            lambda io, cb: io.aio_read(name, size, offset, oncomplete=cb))
        if rv == -errno.ENOENT:
            if must_exist:
                raise NotFound(f"object {name!r} not found")
            return bytes(size)
        if rv < 0:
            raise self._map(-rv, f"read {name}")
        # python3-rados does not shrink its buffer for a 0-byte read (it holds garbage):
        # the return value is the byte count.
        data = (args[0] or b"")[:rv]
        return data if len(data) == size else data + bytes(size - len(data))

    async def read(self, name: str, offset: int, size: int) -> bytes:
        """Read with zeros for holes, short and absent objects."""
        check_name(name)
        check_range(offset, size)
        return await self._read(name, offset, size)

    async def read_existing(self, name: str, offset: int, size: int) -> bytes:
        """Read with zeros for holes and short objects; NotFound if the object is absent."""
        check_name(name)
        check_range(offset, size)
        return await self._read(name, offset, size, must_exist=True)

    async def read_into(self, name: str, offset: int, buf: memoryview,
                        must_exist: bool = False) -> None:
        """Fill ``buf`` (e.g. a segment buffer) from ``offset``, zeros past the data
        (an absent object: zeros, or NotFound with ``must_exist``)."""
        check_name(name)
        check_range(offset, len(buf))
        await self._ioctx()
        if (mv := usable(self._direct, buf)) is None:
            buf[:] = await self._read(name, offset, len(buf), must_exist)
            return
        rv = await direct_read(self, name, offset, mv)
        if rv == -errno.ENOENT:
            if must_exist:
                raise NotFound(f"object {name!r} not found")
            rv = 0
        elif rv < 0:
            raise self._map(-rv, f"read {name}")
        if rv < len(mv):
            mv[rv:] = bytes(len(mv) - rv)

    async def write(self, name: str, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        """Write at offset (RADOS acknowledges only committed writes: always durable)."""
        check_name(name)
        check_range(offset, len(data))
        if (mv := usable(self._direct, data)) is not None:  # no Python copy of the data
            rv = await direct_write(self, name, offset, mv)
            if rv < 0:
                raise await self._write_error(-rv, f"write {name}")
            return
        buf = bytes(data)
        if not buf:
            # A 0-byte RADOS write at an offset would extend the object: only create it.
            rv, _ = await self._aio(
                f"write {name}", 0, lambda io, cb: self._op(io, cb, name, None, create=True))
        else:
            rv, _ = await self._aio(
                f"write {name}", len(buf),
                lambda io, cb: io.aio_write(name, buf, offset, oncomplete=cb))
        if rv < 0:
            raise await self._write_error(-rv, f"write {name}")

    async def put(self, name: str, data: bytes | memoryview, fua: bool = True) -> None:
        """Replace the whole object with write_full (atomic in RADOS)."""
        check_name(name)
        check_range(0, len(data))
        if (mv := usable(self._direct, data)) is None:
            await self._write_full(name, bytes(data))
        elif (rv := await direct_write(self, name, None, mv)) < 0:
            raise await self._write_error(-rv, f"put {name}")

    async def _write_full(self, name: str, buf: bytes) -> None:
        rv, _ = await self._aio(
            f"put {name}", len(buf), lambda io, cb: io.aio_write_full(name, buf, oncomplete=cb))
        if rv < 0:
            raise await self._write_error(-rv, f"put {name}")

    _op = staticmethod(compound_write)

    async def _stat(self, name: str) -> int:
        return int((await self._stat_of(name))[0])

    async def size(self, name: str) -> int:
        """Object size from a stat."""
        check_name(name)
        return await self._stat(name)

    async def copy(self, src: str, dst: str, fua: bool = False) -> None:
        """Copy through the client in COPY_CHUNK pieces.

        python3-rados (pacific) exposes no copy_from (it is C++-only in librados), so
        the data passes through here; objects up to COPY_CHUNK are replaced atomically.
        """
        check_name(src)
        check_name(dst)
        size = await self._stat(src)
        first = await self._read(src, 0, min(size, COPY_CHUNK))
        if src == dst:
            return
        await self._write_full(dst, first)
        for off in range(COPY_CHUNK, size, COPY_CHUNK):
            chunk = await self._read(src, off, min(COPY_CHUNK, size - off))
            rv, _ = await self._aio(
                f"copy to {dst}", len(chunk),
                lambda io, cb, c=chunk, o=off: io.aio_write(dst, c, o, oncomplete=cb))
            if rv < 0:
                raise await self._write_error(-rv, f"copy to {dst}")

    async def delete(self, name: str) -> None:
        """Remove the object; NotFound if absent."""
        check_name(name)
        rv, _ = await self._aio(f"delete {name}", 0, lambda io, cb: io.aio_remove(name, oncomplete=cb))
        if rv == -errno.ENOENT:
            raise NotFound(f"object {name!r} not found")
        if rv < 0:
            raise self._map(-rv, f"delete {name}")

    async def list(self, prefix: str = "") -> list[str]:
        """Sorted object names in the namespace with the prefix (lock objects excluded)."""
        io = await self._ioctx()

        def _list() -> list[str]:
            return sorted(
                o.key for o in io.list_objects()
                if o.key.startswith(prefix) and not o.key.startswith((LOCK_PREFIX, FENCE_PREFIX))
            )

        return await self._thread("list objects", _list)

    async def flush(self) -> None:
        """Wait for in-flight writes; completed RADOS writes are already committed."""
        io = await self._ioctx()
        await self._thread("flush", io.aio_flush)

    async def hash(self, name: str) -> str:
        """Store the content-addressed copy (exclusive create: dedup) and return its name."""
        check_name(name)
        size = await self._stat(name)
        data = await self._read(name, 0, size)
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, is_zero, data):
            return ZERO_HASH
        content = await loop.run_in_executor(None, block_hash, data)
        stripped = data.rstrip(b"\0")
        rv, _ = await self._aio(
            f"hash {name}", len(stripped),
            lambda io, cb: self._op(io, cb, content, stripped, create=True, exclusive=True))
        if rv == -errno.EEXIST:
            await self.touch(content)  # a dedup hit: young again for GC
        elif rv < 0:
            raise await self._write_error(-rv, f"store {content}")
        return content
