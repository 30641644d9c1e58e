"""Object ages on RADOS (for garbage collection's grace period): mtime from a stat, a
touch that stamps it, and a delete guarded by the object's version."""

from __future__ import annotations

import errno
import threading
import time
from typing import Any

from archipelago.blocker.base import check_name
from archipelago.blocker.rados_aio import errno_of, touch_write
from archipelago.errors import NotFound


class RadosAgeMixin:
    """``mtime``, ``touch`` and ``delete_if_old`` of RadosBlocker (docs/gc.md)."""

    _aio: Any
    _map: Any
    _thread: Any
    _ioctx: Any
    _cluster: Any
    pool: str
    namespace: str
    #: An ioctx of its own for the guarded delete: a stat's object version is read back
    #: with get_last_version(), which only means "that stat" on an ioctx nothing else uses.
    _gc_io: Any = None
    _gc_io_lock: threading.Lock | None = None

    async def _stat_of(self, name: str) -> tuple[Any, ...]:
        """(size, mtime as time.struct_time) of an object; NotFound if absent."""
        rv, args = await self._aio(
            f"stat {name}", 0, lambda io, cb: io.aio_stat(name, oncomplete=cb))
        if rv == -errno.ENOENT:
            raise NotFound(f"object {name!r} not found")
        if rv < 0:
            raise self._map(-rv, f"stat {name}")
        return args

    async def mtime(self, name: str) -> float:
        """When the object was last written (Unix time); NotFound if absent."""
        check_name(name)
        return time.mktime((await self._stat_of(name))[1])  # python-rados: localtime(mtime)

    async def touch(self, name: str) -> bool:
        """True if the object exists, and then stamp its mtime with now: a block reused by
        deduplication is young again, so GC spares it (docs/gc.md)."""
        check_name(name)
        rv, _ = await self._aio(f"touch {name}", 0, lambda io, cb: touch_write(io, cb, name))
        if rv == -errno.ENOENT:
            return False
        if rv == -errno.EOPNOTSUPP:  # no omap (an erasure-coded pool): existence only
            return await self.exists(name)  # type: ignore[attr-defined,no-any-return]
        if rv < 0:
            raise self._map(-rv, f"touch {name}")
        return True

    async def delete_if_old(self, name: str, cutoff: float) -> bool:
        """Delete unless written or touched at or after ``cutoff``; NotFound if absent.

        The remove asserts the object version the age was read at, so any write or touch
        in between (each bumps the version) makes the OSD refuse it: the block stays."""
        check_name(name)
        await self._ioctx()
        if self._gc_io_lock is None:
            self._gc_io_lock = threading.Lock()
        return await self._thread(  # type: ignore[no-any-return]
            f"delete {name}", self._delete_if_old_sync, name, cutoff)

    def _delete_if_old_sync(self, name: str, cutoff: float) -> bool:
        import rados

        assert self._gc_io_lock is not None
        with self._gc_io_lock:
            if self._gc_io is None:
                io = self._cluster.open_ioctx(self.pool)
                io.set_namespace(self.namespace)
                io.set_osdmap_full_try()  # deletes must go through on a full pool
                self._gc_io = io
            io = self._gc_io
            try:
                _, mtime = io.stat(name)
                version = io.get_last_version()
            except rados.ObjectNotFound:
                raise NotFound(f"object {name!r} not found") from None
            if time.mktime(mtime) >= cutoff:
                return False
            op = io.create_write_op()
            try:
                op.assert_version(version)
                op.remove()
                io.operate_write_op(op, name)
            except rados.ObjectNotFound:
                raise NotFound(f"object {name!r} not found") from None
            except rados.Error as e:
                # ERANGE: written since the stat (EOVERFLOW cannot happen: versions grow).
                if errno_of(e) in (errno.ERANGE, errno.EOVERFLOW):
                    return False
                raise
            finally:
                io.release_write_op(op)
        return True

    def _close_gc_io(self) -> None:
        """Close the guarded delete's ioctx (before the cluster handle shuts down)."""
        if self._gc_io is not None:
            self._gc_io.close()
            self._gc_io = None
