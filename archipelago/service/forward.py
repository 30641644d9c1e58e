"""Zero-copy forwarding of client data between the mapper peer and the blocker peers.

A 4 MiB write used to be copied into a second segment buffer for the blocker peer
(mapper -> RemoteBlocker), and a read was copied blocker reply -> bytes -> client
buffer. Here the blocker sub-request borrows the client request's own segment buffer
(``share=req``): a write's data goes client buffer -> blocker, a read's data lands
straight in the client's reply buffer. Each 4 MiB request then holds one arena buffer,
not two.

Writes: the mapper peer sets :data:`CURRENT` to the WRITE request it serves; the
SpreadBlocker forwards a ``write``/``put`` whose data *is* that request's data (same
memory, same length: a one-piece, non-copy-up write) with ``share`` instead of a copy.
Everything else about the write (map lookups, copy-up, allocation) stays in the Volume.
Reads: :func:`read_forward` does what Volume.read does for a read inside one block
(same drain and map lookup), asking the blocker peer to reply into the client's buffer.
The client request outlives the sub-request: the mapper only completes it after the
sub-request's reply (cancellation happens only when the mapper peer stops).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from archipelago.blockaccess.objects import zero_fill
from archipelago.errors import NotFound
from archipelago.mapper.format import ZERO
from archipelago.peers.ops import Flag, Op
from archipelago.peers.request import Request
from archipelago.service.remote_blocker import on_wire

#: The mapper request being served in this task (set around Volume.write).
CURRENT: ContextVar[Request | None] = ContextVar("archipelago_forward_req", default=None)


def borrowable(data: Any) -> Request | None:
    """The current request if ``data`` is exactly its segment data, else None."""
    req = CURRENT.get()
    if req is None or not isinstance(data, memoryview):
        return None
    d = req.d
    n = d.data_len
    if n == 0 or len(data) != n or not data.contiguous:
        return None
    seg = req.seg
    ffi = seg.ffi
    at = int(ffi.cast("uintptr_t", ffi.from_buffer(data)))
    if at != int(ffi.cast("uintptr_t", seg.base)) + d.buf_off:
        return None
    return req


async def call_shared(remote: Any, op: Op, name: str, offset: int, size: int, flags: int,
                      req: Request, arg: int = 0) -> Any:
    """One request to ``remote``'s blocker peer on ``req``'s buffer; returns the Reply."""
    target, flags = on_wire(op, name, flags)
    return await remote.client.call(remote.dst, op, target, offset=offset, size=size,
                                    flags=flags, arg=arg, share=req)


async def read_forward(vol: Any, spread: Any, req: Request) -> bool:
    """Serve a READ inside one block into ``req``'s own buffer; False: use Volume.read."""
    offset, n = req.offset, req.size
    h = vol.header
    bs = h.block_size
    i, o = divmod(offset, bs)
    if vol.closed or n == 0 or o + n > bs or offset + n > h.size:
        return False
    d = req.d
    if d.buf_off == 0 or d.buf_len < n:
        return False  # no client buffer to borrow (the generic path allocates one)
    async with vol.drain.shared():
        if vol.closed:
            return False  # Volume.read raises the proper error
        kind, ident = await vol.entry(i)
        buf = req.reply_buffer(n)
        if kind == ZERO:
            zero_fill(buf, 0, n)
        else:
            try:
                r = await spread.read_shared(vol.header.name_of(kind, ident), o, n, req,
                                             Flag.MUST_EXIST)
            except NotFound:
                return False  # Volume.read rechecks the entry and raises MissingBlock
            got = len(r.data)
            r.release()
            if got < n:  # blockers pad holes with zeros; never hand out stale bytes
                zero_fill(buf, got, n)
            d.data_len = n  # the sub-reply set the length on its own descriptor only
    req.reply(serviced=n)
    return True


async def serve_read(fast: Any, vol: Any, spread: Any, req: Request) -> None:
    """The mapper peer's READ: direct I/O (direct_io.py), else one-block forward, else
    Volume.read."""
    if fast is not None and fast.read_into(vol, req.reply_buffer(req.size), req.offset):
        req.reply(serviced=req.size)
    elif not await read_forward(vol, spread, req):
        req.reply(await vol.read(req.offset, req.size))
