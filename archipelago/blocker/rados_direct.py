"""Zero-copy data path for the RADOS blocker: librados aio on raw buffers through ctypes.

python3-rados takes ``bytes`` only, so a write from the segment (a memoryview) cost a
4 MiB Python copy with the GIL held before librados copied it again into its
bufferlist, and a read came back as a new bytes object that the blocker peer copied
into the segment. Here ``rados_aio_write``/``rados_aio_read`` get the segment memory
directly: librados' own copy (GIL released) is the only one for a write, and a read
lands straight in the request's buffer.

The ioctx is the one python3-rados opened (same connection, namespace and FULL_TRY
flag): its ``rados_ioctx_t`` is the first C field after the owning Rados object in the
Cython Ioctx struct. :func:`direct_io` checks that layout (the word before it must be
the Rados object, the pool id and namespace read through it must match) and returns
None when anything differs, and the blocker keeps the python3-rados path.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_lib: Any = None
_pending: dict[int, tuple[Callable[[int], None], bool]] = {}
_keys = itertools.count(1)
_pinned = threading.local()


def pin_thread_state() -> None:
    """Keep the calling foreign thread's Python thread state between ctypes callbacks.

    For a thread Python did not start, every callback creates a thread state and frees
    it on return, and 3.11 maps and unmaps its frame stack each time: per completion an
    mmap, a munmap and the TLB shootdown of every core running the process (a third of
    a peer's CPU on small I/O). One PyGILState_Ensure never released keeps it.
    """
    if not getattr(_pinned, "done", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _pinned.done = True


class _Done:
    """Stands in for a python3-rados Completion in RadosBlocker._aio's callback."""

    __slots__ = ("rv",)

    def __init__(self, rv: int) -> None:
        self.rv = rv

    def get_return_value(self) -> int:
        """The operation's return value."""
        return self.rv


def _on_complete(comp: int, arg: int) -> None:
    # A librados finisher thread (ctypes took the GIL): hand over and release.
    pin_thread_state()
    fn, release = _pending.pop(arg or 0, (None, True))
    rv = _lib.rados_aio_get_return_value(comp)
    if release:  # librados holds its own reference during this call
        _lib.rados_aio_release(comp)
    if fn is not None:
        fn(rv)


_callback = _CB(_on_complete)


def _load() -> Any:
    global _lib
    if _lib is None:
        lib = ctypes.CDLL("librados.so.2")
        vp, sz, u64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64
        lib.rados_aio_create_completion2.argtypes = [vp, _CB, ctypes.POINTER(vp)]
        lib.rados_aio_write.argtypes = [vp, ctypes.c_char_p, vp, vp, sz, u64]
        lib.rados_aio_read.argtypes = [vp, ctypes.c_char_p, vp, vp, sz, u64]
        lib.rados_aio_write_full.argtypes = [vp, ctypes.c_char_p, vp, vp, sz]
        lib.rados_aio_get_return_value.argtypes = [vp]
        lib.rados_aio_release.argtypes = [vp]
        lib.rados_aio_cancel.argtypes = [vp, vp]
        lib.rados_ioctx_get_id.argtypes = [vp]
        lib.rados_ioctx_get_id.restype = ctypes.c_int64
        lib.rados_ioctx_get_namespace.argtypes = [vp, ctypes.c_char_p, ctypes.c_uint]
        _lib = lib
    return _lib


class DirectIO:
    """aio write/read on raw memory through an ioctx opened by python3-rados."""

    def __init__(self, io: Any, ptr: int) -> None:
        self.io = io  # keeps the python3-rados Ioctx (and its rados_ioctx_t) alive
        self.ptr = ptr
        self.lib = _load()
        self._comps: dict[int, Any] = {}  # reads in flight, for cancel

    def _start(self, fn: Callable[[int], None], release: bool = True) -> tuple[int, Any]:
        key = next(_keys)
        comp = ctypes.c_void_p()
        _pending[key] = (fn, release)
        rc = self.lib.rados_aio_create_completion2(key, _callback, ctypes.byref(comp))
        if rc < 0:
            _pending.pop(key, None)
            raise OSError(-rc, os.strerror(-rc))
        return key, comp

    def _go(self, rc: int, key: int, comp: Any) -> None:
        if rc < 0:
            _pending.pop(key, None)
            self.lib.rados_aio_release(comp)
            raise OSError(-rc, os.strerror(-rc))

    def write(self, name: str, buf: memoryview, offset: int | None,
              done: Callable[[int], None]) -> int:
        """Start a write of ``buf`` at ``offset`` (None: write_full); librados copies the
        data before this returns. Returns the key for :meth:`cancel`."""
        key, comp = self._start(done)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        if offset is None:
            rc = self.lib.rados_aio_write_full(self.ptr, name.encode(), comp, addr, len(buf))
        else:
            rc = self.lib.rados_aio_write(self.ptr, name.encode(), comp, addr, len(buf), offset)
        self._go(rc, key, comp)
        return key

    def read(self, name: str, buf: memoryview, offset: int, done: Callable[[int], None]) -> int:
        """Start a read into ``buf``, which must stay valid until ``done`` (or :meth:`cancel`);
        then call :meth:`finished` (a read's completion is released by the loop, never
        while :meth:`cancel` may still use it)."""
        key, comp = self._start(done, release=False)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        self._go(self.lib.rados_aio_read(self.ptr, name.encode(), comp, addr, len(buf), offset),
                 key, comp)
        self._comps[key] = comp
        return key

    def finished(self, key: int) -> None:
        """Release a read's completion (after ``done`` ran)."""
        comp = self._comps.pop(key, None)
        if comp is not None:
            self.lib.rados_aio_release(comp)

    def cancel(self, key: int) -> None:
        """Cancel a read whose waiter gave up (its buffer is about to go away), release it."""
        comp = self._comps.pop(key, None)
        if comp is not None:
            self.lib.rados_aio_cancel(self.ptr, comp)
            self.lib.rados_aio_release(comp)  # the pending op holds its own reference


def direct_io(cluster: Any, io: Any, pool_id: int, namespace: str) -> DirectIO | None:
    """A DirectIO on python3-rados' ``io``, or None if its layout is not the known one."""
    if os.environ.get("ARCHIPELAGO_RADOS_NO_DIRECT") == "1":
        return None
    try:
        lib = _load()
        words = (ctypes.c_void_p * 2).from_address(id(io) + 16)
        if words[0] != id(cluster) or not words[1]:
            return None
        ptr = int(words[1])
        if ptr in {id(v) for v in (io.name, io.state, io.nspace, io.locator_key)}:
            return None
        if lib.rados_ioctx_get_id(ptr) != pool_id:
            return None
        buf = ctypes.create_string_buffer(len(namespace.encode()) + 16)
        n = lib.rados_ioctx_get_namespace(ptr, buf, len(buf))
        if n < 0 or buf.value != namespace.encode():
            return None
        return DirectIO(io, ptr)
    except Exception as e:  # noqa: BLE001 - any surprise: keep the python3-rados path
        log.info("no direct librados data path: %s", e)
        return None


def usable(direct: DirectIO | None, data: Any) -> memoryview | None:
    """``data`` as a writable byte view if the direct path can take it, else None."""
    if direct is None or isinstance(data, bytes) or not len(data):
        return None  # bytes go to python3-rados as they are: no copy there either
    mv = memoryview(data)
    return None if mv.readonly or not mv.contiguous else mv.cast("B")


async def direct_write(blk: Any, name: str, offset: int | None, mv: memoryview) -> int:
    """Write (``offset`` None: write_full) through ``blk``'s DirectIO; the return value."""
    d: DirectIO = blk._direct
    rv, _ = await blk._aio(f"write {name}", len(mv), lambda io, cb: d.write(
        name, mv, offset, lambda r: cb(_Done(r))))
    return rv


async def direct_read(blk: Any, name: str, offset: int, buf: memoryview) -> int:
    """Read into ``buf`` through ``blk``'s DirectIO; returns the return value (bytes read)."""
    d: DirectIO = blk._direct
    keys: list[int] = []

    def start(io: Any, cb: Callable[..., None]) -> None:
        keys.append(d.read(name, buf, offset, lambda r: cb(_Done(r))))

    try:
        rv, _ = await blk._aio(f"read {name}", len(buf), start)
    except BaseException:
        if keys:  # gave up waiting (or cancelled): librados must not write into buf later
            d.cancel(keys[0])
        raise
    d.finished(keys[0])
    return rv
