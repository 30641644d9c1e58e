"""Views of a segment descriptor: Request (server side) and Reply (client side).

Both are thin wrappers over a ``struct ap_desc *``; payloads are memoryviews into
the segment (zero copy) that stay valid until the descriptor is completed or released.
"""

from __future__ import annotations

from typing import Any

from archipelago.errors import ArchipelagoError, Busy, InvalidArgument, from_code
from archipelago.peers.ops import Op
from archipelago.peers.segment import Segment

TARGET_MAX = 256
D_COMPLETED = 3


def _str(seg: Segment, arr: Any, n: int) -> str:
    return seg.ffi.unpack(arr, n).decode("utf-8", "replace")


def fill(seg: Segment, d: Any, op: int, target: str | bytes, offset: int, size: int,
         flags: int, arg: int, req_id: int) -> None:
    """Write the request fields of a freshly allocated descriptor."""
    tb = target.encode() if isinstance(target, str) else target
    if len(tb) > TARGET_MAX:
        raise InvalidArgument(f"target longer than {TARGET_MAX} bytes")
    if offset < 0 or size < 0:
        raise InvalidArgument("negative offset or size")
    d.op, d.flags, d.offset, d.size, d.arg, d.req_id = op, flags, offset, size, arg, req_id
    if tb:
        seg.ffi.memmove(d.target, tb, len(tb))
    d.target_len = len(tb)


def attach_buffer(seg: Segment, idx: int, d: Any, size: int, port: int) -> memoryview:
    """Give descriptor ``idx`` a buffer of at least ``size`` bytes; returns its full view."""
    lib = seg.lib
    h = lib.ap_buf_alloc(seg.base, size, port)
    if h < 0:
        if size > seg.max_buffer:
            raise InvalidArgument(f"buffer of {size} bytes exceeds the arena's {seg.max_buffer}")
        raise Busy(f"segment arena exhausted (no free {size}-byte buffer)")
    if lib.ap_desc_attach(seg.base, idx, h) != 0:
        lib.ap_buf_free(seg.base, h, port)
        raise Busy("cannot attach buffer")
    return seg.view[d.buf_off : d.buf_off + d.buf_len]


def error_of(seg: Segment, d: Any) -> ArchipelagoError | None:
    """The error a completed descriptor carries, rebuilt from its code string."""
    if d.err == 0 and d.code_len == 0:
        return None
    code = _str(seg, d.code, d.code_len) or "internal"
    msg = seg.ffi.string(d.msg).decode("utf-8", "replace") or None
    return from_code(code, msg)


class _View:
    __slots__ = ("seg", "idx", "d")

    def __init__(self, seg: Segment, idx: int) -> None:
        self.seg = seg
        self.idx = idx
        self.d = seg.lib.ap_desc_ptr(seg.base, idx)

    @property
    def op(self) -> Op:
        return Op(self.d.op)

    @property
    def flags(self) -> int:
        return int(self.d.flags)

    @property
    def offset(self) -> int:
        return int(self.d.offset)

    @property
    def size(self) -> int:
        return int(self.d.size)

    @property
    def arg(self) -> int:
        return int(self.d.arg)

    @property
    def req_id(self) -> int:
        return int(self.d.req_id)

    @property
    def serviced(self) -> int:
        return int(self.d.serviced)

    @property
    def target(self) -> str:
        return _str(self.seg, self.d.target, self.d.target_len)

    @property
    def data(self) -> memoryview:
        """Payload bytes (request payload on a Request, reply data on a Reply); zero copy."""
        d = self.d
        if d.buf_off == 0:
            return memoryview(b"")
        return self.seg.view[d.buf_off : d.buf_off + d.data_len]

    @property
    def buffer(self) -> memoryview:
        """The whole attached buffer (capacity), or an empty view."""
        d = self.d
        if d.buf_off == 0:
            return memoryview(b"")
        return self.seg.view[d.buf_off : d.buf_off + d.buf_len]


class Request(_View):
    """A request being served; fill the reply with :meth:`reply` or :meth:`fail`."""

    __slots__ = ("port",)

    def __init__(self, seg: Segment, idx: int, port: int) -> None:
        super().__init__(seg, idx)
        self.port = port

    @property
    def src(self) -> int:
        """The submitting (client) port."""
        return int(self.d.owner)

    def reply_buffer(self, size: int) -> memoryview:
        """A writable view of ``size`` bytes for reply data (reuses the request's buffer)."""
        d = self.d
        if d.buf_off == 0 or d.buf_len < size:
            attach_buffer(self.seg, self.idx, d, size, self.port)
        d.data_len = size
        return self.seg.view[d.buf_off : d.buf_off + size]

    def reply(self, data: bytes | bytearray | memoryview | None = None, *,
              serviced: int | None = None, arg: int | None = None) -> None:
        """Copy ``data`` into the reply buffer and set serviced bytes / the arg word."""
        d = self.d
        if data is not None:
            n = len(data)
            if n:
                self.reply_buffer(n)[:] = data
            else:
                d.data_len = 0
            d.serviced = n
        if serviced is not None:
            d.serviced = serviced
        if arg is not None:
            d.arg = arg

    def fail(self, exc: ArchipelagoError) -> None:
        """Mark the request failed with ``exc`` (its code string and errno travel back)."""
        d = self.d
        code = exc.code.encode()[:32]
        msg = exc.message.encode("utf-8", "replace")[:95]
        self.seg.ffi.memmove(d.code, code, len(code))
        d.code_len = len(code)
        self.seg.ffi.memmove(d.msg, msg + b"\0", len(msg) + 1)
        d.err = exc.errno or 5
        d.data_len = 0


class Reply(_View):
    """A completed request owned by the client; call :meth:`release` when done with data."""

    __slots__ = ("_released",)

    def __init__(self, seg: Segment, idx: int) -> None:
        super().__init__(seg, idx)
        self._released = False

    def release(self) -> None:
        """Return the descriptor and its buffer to the pools (views become invalid)."""
        if not self._released:
            self._released = True
            self.seg.lib.ap_desc_free(self.seg.base, self.idx, D_COMPLETED)

    def bytes(self) -> bytes:
        """Copy the reply data out and release."""
        out = bytes(self.data)
        self.release()
        return out

    def __enter__(self) -> Reply:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
