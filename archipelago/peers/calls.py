"""Building, queueing and finishing requests: the helpers both peer clients share.

``_build`` is the hot path (allocate, fill, copy the payload and queue in one native
call, no wake-up); ``_prepare`` + ``_submit`` the general one (a shared buffer).
"""

from __future__ import annotations

import errno
import itertools
import logging
from collections.abc import Callable
from typing import Any

from archipelago.errors import Busy, InvalidArgument, PeerDied
from archipelago.peers.ops import Op
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import TARGET_MAX, Reply, error_of, fill

Payload = bytes | bytearray | memoryview
MAX_REQUEST = 32 * 1024 * 1024
_ids = itertools.count(1)
#: Back-pressure when descriptors or buffers run out: retry for up to ~5 s.
BUSY_SLEEP = 0.0005
BUSY_RETRIES = 10000
NOWAKE = -2  # AP_NOWAKE: queue now, signal the server once per loop iteration
BATCH = 64  # replies popped per native call
_ABANDONED = object()  # completion-table mark: free the reply when it arrives
log = logging.getLogger(__name__)


def _prepare(seg: Any, port: int, op: int, target: str | bytes, offset: int, size: int,
             payload: Payload | None, flags: int, arg: int, buf_size: int | None,
             share: Any = None) -> int:
    lib = seg.lib
    tb = target.encode() if isinstance(target, str) else target
    if len(tb) > TARGET_MAX:
        raise InvalidArgument(f"target longer than {TARGET_MAX} bytes")
    if offset < 0 or size < 0:
        raise InvalidArgument("negative offset or size")
    n = len(payload) if payload is not None else 0
    need = max(n, buf_size if buf_size is not None else (size if op == Op.READ else 0))
    if share is None:  # the hot path: one C call allocates, fills and copies the payload
        src = seg.ffi.from_buffer(payload) if n else seg.ffi.NULL
        idx = lib.ap_request_new(seg.base, port, op, flags, offset, size, arg, next(_ids),
                                 tb, len(tb), need, src, n)
        if idx >= 0:
            return idx
        if idx == -1:
            raise Busy("segment descriptor pool exhausted")
        if need > seg.max_buffer:
            raise InvalidArgument(f"buffer of {need} bytes exceeds the arena's {seg.max_buffer}")
        raise Busy(f"segment arena exhausted (no free {need}-byte buffer)")
    idx = lib.ap_desc_alloc(seg.base, port)
    if idx < 0:
        raise Busy("segment descriptor pool exhausted")
    try:
        d = lib.ap_desc_ptr(seg.base, idx)
        fill(seg, d, op, tb, offset, size, flags, arg, next(_ids))
        # borrow the buffer of a request being served: zero copy, no allocation, so
        # a forwarding peer never waits for arena space its own clients hold
        sd = share.d
        if sd.buf_off == 0 or sd.buf_len < need:
            raise InvalidArgument("shared buffer missing or too small")
        d.buf_off, d.buf_len = sd.buf_off, sd.buf_len
        if payload is not None:
            if n:
                seg.view[sd.buf_off : sd.buf_off + n] = payload
            d.data_len = n
        else:
            d.data_len = sd.data_len
    except BaseException:
        lib.ap_desc_free(seg.base, idx, 1)
        raise
    return idx


def _build(seg: Any, port: int, dst: int, op: int, target: str | bytes, offset: int,
           size: int, payload: Payload | None, flags: int, arg: int,
           buf_size: int | None) -> int:
    """Allocate, fill and queue a request (no wake-up) in one native call; its index."""
    tb = target.encode() if isinstance(target, str) else target
    n = len(payload) if payload is not None else 0
    need = max(n, buf_size if buf_size is not None else (size if op == Op.READ else 0))
    if offset < 0 or size < 0:
        raise InvalidArgument("negative offset or size")
    lib = seg.lib
    idx = lib.ap_request_submit(seg.base, port, dst, op, flags, offset, size, arg, next(_ids),
                                tb, len(tb), need, seg.ffi.from_buffer(payload) if n else
                                seg.ffi.NULL, n)
    if idx >= 0:
        return idx
    if idx == lib.AP_E_NODESC:
        raise Busy("segment descriptor pool exhausted")
    if idx == lib.AP_E_NOBUF:
        if need > seg.max_buffer:
            raise InvalidArgument(f"buffer of {need} bytes exceeds the arena's {seg.max_buffer}")
        raise Busy(f"segment arena exhausted (no free {need}-byte buffer)")
    if idx == lib.AP_E_TARGET:
        raise InvalidArgument(f"target longer than {TARGET_MAX} bytes")
    if idx == lib.AP_E_NOTCONN:
        raise PeerDied(f"no peer bound on port {dst}")
    if idx == lib.AP_E_FULL:
        raise Busy(f"request ring of port {dst} is full")
    raise InvalidArgument(f"no port {dst} in the segment")


def _run_callback(done: Callable[[int], None], idx: int) -> None:
    try:
        done(idx)
    except Exception:  # noqa: BLE001 - one callback's bug must not lose the batch's others
        log.exception("completion callback for descriptor %d failed", idx)


def _finish(seg: Any, idx: int) -> Reply:
    reply = Reply(seg, idx)
    exc = error_of(seg, reply.d)
    if exc is not None:
        reply.release()
        raise exc
    return reply


def _submit(seg: Any, link: PeerLink, idx: int, dst: int, efd: int | None = None) -> None:
    if not 0 <= dst < len(link.efds):
        seg.lib.ap_desc_free(seg.base, idx, 1)
        raise InvalidArgument(f"no port {dst} in the segment")
    rc = seg.lib.ap_submit(seg.base, idx, dst, link.efds[dst] if efd is None else efd)
    if rc < 0:
        seg.lib.ap_desc_free(seg.base, idx, 1)
        if rc == -errno.ENOTCONN:
            raise PeerDied(f"no peer bound on port {dst}")
        raise Busy(f"request ring of port {dst} is full")
