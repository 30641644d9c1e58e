"""Batched librados aio for small I/O: raw buffers in, completions gathered per wake-up.

RadosBlocker._aio pays per request for a Future, a wait_for timer, a budget Condition
and one ``call_soon_threadsafe`` (a loop wake-up) per completion. Here a request is a
few ctypes calls on the ioctx python3-rados opened (rados_direct.DirectIO.ptr); the
librados finisher thread only appends (token, return value) to a list and wakes the
loop when that list was empty, so every completion that arrived meanwhile is handled
in one pass (``on_batch``). Reads land straight in the caller's buffer; writes go
through a write op asserting the object exists, so a write never recreates an object
removed meanwhile (a zeroed block): it fails with ENOENT and the caller falls back.
The caller keeps every buffer valid until its completion was handed over.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
from collections.abc import Callable
from typing import Any

from archipelago.blocker.rados_direct import _load, pin_thread_state

_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_ops_loaded = False


def _lib() -> Any:
    global _ops_loaded
    lib = _load()
    if not _ops_loaded:
        vp = ctypes.c_void_p
        lib.rados_aio_write_op_operate.argtypes = [vp, vp, vp, ctypes.c_char_p, vp, ctypes.c_int]
        _ops_loaded = True
    return lib


_quick: Any = None


def _quick_lib() -> Any:
    """librados through PyDLL, for calls that only touch objects of their own (a
    completion, a write op): they keep the GIL instead of dropping and re-taking it,
    which costs a futex hand-off with the other thread on every call."""
    global _quick
    if _quick is None:
        q = ctypes.PyDLL("librados.so.2")
        vp, sz, u64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64
        q.rados_aio_create_completion2.argtypes = [vp, _CB, ctypes.POINTER(vp)]
        q.rados_aio_get_return_value.argtypes = [vp]
        q.rados_aio_release.argtypes = [vp]
        q.rados_create_write_op.argtypes = []
        q.rados_create_write_op.restype = vp
        q.rados_release_write_op.argtypes = [vp]
        q.rados_write_op_assert_exists.argtypes = [vp]
        q.rados_write_op_write.argtypes = [vp, vp, sz, u64]
        _quick = q
    return _quick


class AioBatch:
    """Small reads and in-place writes on one ioctx; ``on_batch([(token, rv), ...])``
    runs on ``loop`` with every completion gathered since the last pass."""

    def __init__(self, ioctx_ptr: int, loop: asyncio.AbstractEventLoop,
                 on_batch: Callable[[list[tuple[Any, int]]], None]) -> None:
        self.lib = _lib()  # submissions: the GIL is released while librados queues the op
        self.q = _quick_lib()
        self.ptr = ioctx_ptr
        self.loop = loop
        self.on_batch = on_batch
        self._tokens: dict[int, Any] = {}
        self._keys = itertools.count(1)
        self._done: list[tuple[Any, int]] = []
        self._armed = False
        self.closed = False
        # One ctypes callback object per batch: it must outlive every completion.
        self._cb = _CB(self._on_complete)

    @property
    def pending(self) -> int:
        """Operations started and not yet handed to ``on_batch``."""
        return len(self._tokens) + len(self._done)

    def _on_complete(self, comp: int, arg: int) -> None:
        # A librados finisher thread (ctypes took the GIL): hand over, wake once.
        pin_thread_state()
        q = self.q
        rv = q.rados_aio_get_return_value(comp)
        q.rados_aio_release(comp)  # librados keeps its own reference during this call
        token = self._tokens.pop(arg or 0, None)
        self._done.append((token, rv))
        if not self._armed:
            self._armed = True
            try:
                self.loop.call_soon_threadsafe(self._pass)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

    def _pass(self) -> None:
        self._armed = False  # before taking the list: a later completion re-arms
        done, self._done = self._done, []
        if done:
            self.on_batch(done)

    def _completion(self, token: Any) -> tuple[int, Any]:
        key = next(self._keys)
        comp = ctypes.c_void_p()
        self._tokens[key] = token
        rc = self.q.rados_aio_create_completion2(key, self._cb, ctypes.byref(comp))
        if rc < 0:
            self._tokens.pop(key, None)
            raise OSError(-rc, os.strerror(-rc))
        return key, comp

    def _started(self, rc: int, key: int, comp: Any) -> None:
        if rc < 0:
            self._tokens.pop(key, None)
            self.q.rados_aio_release(comp)
            raise OSError(-rc, os.strerror(-rc))

    def read(self, oid: bytes, buf: memoryview, offset: int, token: Any) -> None:
        """Start a read of ``len(buf)`` bytes at ``offset`` of ``oid`` into ``buf``; its
        return value is the byte count (short at the object's end) or -ENOENT."""
        key, comp = self._completion(token)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        self._started(self.lib.rados_aio_read(self.ptr, oid, comp, addr, len(buf), offset),
                      key, comp)

    def write_existing(self, oid: bytes, buf: memoryview, offset: int, token: Any) -> None:
        """Start a write of ``buf`` at ``offset`` of ``oid`` if the object exists (else
        -ENOENT, nothing written); librados copies the data before this returns."""
        q = self.q
        key, comp = self._completion(token)
        op = q.rados_create_write_op()
        try:
            q.rados_write_op_assert_exists(op)
            q.rados_write_op_write(op, ctypes.addressof(ctypes.c_char.from_buffer(buf)),
                                   len(buf), offset)
            # mtime NULL: librados stamps the current time (GC ages objects by it)
            rc = self.lib.rados_aio_write_op_operate(op, self.ptr, comp, oid, None, 0)
        finally:
            q.rados_release_write_op(op)
        self._started(rc, key, comp)
