"""RADOS advisory locks through librados' C API (ctypes), for what python3-rados lacks.

Debian's python3-rados (pacific) can take and release a lock, but cannot list the
lockers of an object nor break another client's lock. Both are in the C API, so
this module opens its own small librados handle and does every lock operation
there (one client identity for all of a blocker's locks). The calls block: the
blocker runs them in a thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import threading
import time
from dataclasses import dataclass
from typing import Any

from archipelago.blocker.base import LockInfo, check_name, parse_owner
from archipelago.errors import InvalidArgument, Locked

LOCK_NAME = "archipelago"
#: Lock objects are "lock/<name>": "/" never occurs in a valid object name.
LOCK_PREFIX = "lock/"
#: LIBRADOS_LOCK_FLAG_MAY_RENEW: re-taking our own lock (same client and cookie) succeeds.
LOCK_FLAG_MAY_RENEW = 1

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _librados() -> ctypes.CDLL:
    """Load librados.so.2 once, with prototypes for the calls used here."""
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL(ctypes.util.find_library("rados") or "librados.so.2")
            vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)
            protos = {
                "rados_create": ([ctypes.POINTER(vp), cp], ctypes.c_int),
                "rados_conf_read_file": ([vp, cp], ctypes.c_int),
                "rados_conf_set": ([vp, cp, cp], ctypes.c_int),
                "rados_connect": ([vp], ctypes.c_int),
                "rados_shutdown": ([vp], None),
                "rados_ioctx_create": ([vp, cp, ctypes.POINTER(vp)], ctypes.c_int),
                "rados_ioctx_destroy": ([vp], None),
                "rados_ioctx_set_namespace": ([vp, cp], None),
                "rados_lock_exclusive": ([vp, cp, cp, cp, cp, vp, ctypes.c_uint8], ctypes.c_int),
                "rados_unlock": ([vp, cp, cp, cp], ctypes.c_int),
                "rados_break_lock": ([vp, cp, cp, cp, cp], ctypes.c_int),
                "rados_list_lockers": (
                    [vp, cp, cp, ctypes.POINTER(ctypes.c_int), cp, sz, cp, sz, cp, sz, cp, sz],
                    ctypes.c_ssize_t,
                ),
            }
            for name, (args, res) in protos.items():
                fn = getattr(lib, name)
                fn.argtypes = args
                fn.restype = res
            _lib = lib
    return _lib


class RadosCallError(Exception):
    """A librados call returned a negative errno."""

    def __init__(self, call: str, rc: int) -> None:
        super().__init__(f"{call}: {errno.errorcode.get(-rc, rc)}")
        self.errno = -rc


def _check(call: str, rc: int) -> int:
    if rc < 0:
        raise RadosCallError(call, rc)
    return rc


@dataclass(frozen=True)
class Locker:
    """One holder of a RADOS lock: the client entity and its cookie."""

    client: str
    cookie: str


class LockHandle:
    """A librados connection used only for lock calls (all methods block)."""

    def __init__(
        self, conffile: str, pool: str, namespace: str, conf: dict[str, str],
        rados_id: str | None = None,
    ) -> None:
        lib = _librados()
        self._lib = lib
        self._cluster = ctypes.c_void_p()
        self._io = ctypes.c_void_p()
        rid = rados_id.encode() if rados_id else None
        _check("rados_create", lib.rados_create(ctypes.byref(self._cluster), rid))
        try:
            _check("rados_conf_read_file", lib.rados_conf_read_file(self._cluster, conffile.encode()))
            for key, value in conf.items():
                _check(f"rados_conf_set {key}",
                       lib.rados_conf_set(self._cluster, key.encode(), value.encode()))
            _check("rados_connect", lib.rados_connect(self._cluster))
            _check("rados_ioctx_create",
                   lib.rados_ioctx_create(self._cluster, pool.encode(), ctypes.byref(self._io)))
        except BaseException:
            lib.rados_shutdown(self._cluster)
            raise
        lib.rados_ioctx_set_namespace(self._io, namespace.encode())

    def lock_exclusive(self, oid: str, name: str, cookie: str, desc: str) -> int:
        """Take (or renew) the exclusive lock; returns 0 or a negative errno."""
        return self._lib.rados_lock_exclusive(
            self._io, oid.encode(), name.encode(), cookie.encode(), desc.encode(), None,
            LOCK_FLAG_MAY_RENEW)

    def break_lock(self, oid: str, name: str, locker: Locker) -> int:
        """Remove any client's lock; returns 0 or a negative errno."""
        return self._lib.rados_break_lock(
            self._io, oid.encode(), name.encode(), locker.client.encode(), locker.cookie.encode())

    def lockers(self, oid: str, name: str) -> list[Locker]:
        """Current holders of lock ``name`` on ``oid`` (empty when free or absent)."""
        size = 4096
        while True:
            excl = ctypes.c_int()
            bufs = [ctypes.create_string_buffer(size) for _ in range(4)]
            lens = [ctypes.c_size_t(size) for _ in range(4)]
            rc = self._lib.rados_list_lockers(
                self._io, oid.encode(), name.encode(), ctypes.byref(excl),
                bufs[0], ctypes.byref(lens[0]), bufs[1], ctypes.byref(lens[1]),
                bufs[2], ctypes.byref(lens[2]), bufs[3], ctypes.byref(lens[3]))
            if rc == -errno.ERANGE:
                size = max(size * 2, *(n.value for n in lens))
                continue
            if rc == -errno.ENOENT:
                return []
            _check("rados_list_lockers", rc)
            clients = bufs[1].raw[: lens[1].value].split(b"\0")
            cookies = bufs[2].raw[: lens[2].value].split(b"\0")
            return [Locker(clients[i].decode(), cookies[i].decode()) for i in range(rc)]

    def close(self) -> None:
        """Disconnect (locks stay: they belong to the object, not the connection)."""
        if self._io:
            self._lib.rados_ioctx_destroy(self._io)
            self._io = ctypes.c_void_p()
        if self._cluster:
            self._lib.rados_shutdown(self._cluster)
            self._cluster = ctypes.c_void_p()


class RadosLocksMixin:
    """lock/unlock/lock_info of the RADOS blocker (needs _lock_handle, _thread, _map)."""

    async def _lock_handle(self) -> LockHandle:
        raise NotImplementedError

    async def _thread(self, what: str, fn: Any, *args: Any) -> Any:
        raise NotImplementedError

    def _map(self, err: int, what: str) -> Exception:
        raise NotImplementedError

    async def lock(self, name: str, owner: str, wait: bool = False, timeout: float | None = None) -> None:
        """Take the exclusive RADOS lock with the owner string as cookie."""
        check_name(name)
        if not owner:
            raise InvalidArgument("lock owner must be a non-empty string")
        h = await self._lock_handle()
        oid = LOCK_PREFIX + name
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            rc = await self._thread(f"lock {name}", h.lock_exclusive, oid, LOCK_NAME, owner, owner)
            if rc == 0:
                return
            if rc not in (-errno.EBUSY, -errno.EEXIST):
                raise self._map(-rc, f"lock {name}")
            lockers = await self._thread(f"lock {name}", h.lockers, oid, LOCK_NAME)
            mine = [lk for lk in lockers if lk.cookie == owner]
            if mine and len(mine) == len(lockers):
                # Same owner from another client instance (RADOS ties locks to the
                # client id): the owner re-takes its own lock.
                for lk in mine:
                    await self._break(h, oid, lk)
                continue
            if not lockers:
                continue  # released meanwhile
            holder = lockers[0].cookie
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise Locked(f"{name!r} is locked by {holder}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _break(self, h: LockHandle, oid: str, locker: Locker) -> None:
        rc = await self._thread(f"break lock {oid}", h.break_lock, oid, LOCK_NAME, locker)
        if rc < 0 and rc != -errno.ENOENT:
            raise self._map(-rc, f"break lock {oid}")

    async def unlock(self, name: str, owner: str, force: bool = False) -> None:
        """Release the lock; with force, break whoever holds it."""
        check_name(name)
        h = await self._lock_handle()
        oid = LOCK_PREFIX + name
        lockers = await self._thread(f"unlock {name}", h.lockers, oid, LOCK_NAME)
        for lk in lockers:
            if lk.cookie != owner and not force:
                raise Locked(f"{name!r} is locked by {lk.cookie}")
        for lk in lockers:
            await self._break(h, oid, lk)

    async def lock_info(self, name: str) -> LockInfo | None:
        """The holder (from the lock cookie), or None."""
        check_name(name)
        h = await self._lock_handle()
        lockers = await self._thread(f"lock info {name}", h.lockers, LOCK_PREFIX + name, LOCK_NAME)
        return parse_owner(lockers[0].cookie) if lockers else None
