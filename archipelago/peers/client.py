"""Client API: submit a request to a server port and get its Reply (async and blocking).

``AsyncClient`` runs on the caller's event loop (one port per client).
``BlockingClient`` binds one port per thread and waits in C with the GIL released
(poll on the port's eventfd and the registry socket), for nbdkit worker threads.
A reply's ``data`` is a memoryview into the segment; ``release()`` it when done.
Requests above the arena's largest buffer (4 MiB) are split by ``read``/``write``.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from archipelago.errors import Busy, InvalidArgument, PeerDied, TimedOut
from archipelago.peers.ops import Op
from archipelago.peers.port import Port
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import D_COMPLETED, TARGET_MAX, Reply, Request, error_of, fill

Payload = bytes | bytearray | memoryview
MAX_REQUEST = 32 * 1024 * 1024
_ids = itertools.count(1)
#: Back-pressure when descriptors or buffers run out: retry for up to ~5 s.
BUSY_SLEEP = 0.0005
BUSY_RETRIES = 10000
NOWAKE = -2  # AP_NOWAKE: queue now, signal the server once per loop iteration


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


class AsyncClient:
    """Submit requests from an asyncio loop; replies resolve futures."""

    def __init__(self, link: PeerLink, port: Port | None = None) -> None:
        self.link = link
        self.seg = link.segment
        self.port = port or Port(link)
        self.port.client = self
        self._pending: dict[int, asyncio.Future[int] | None] = {}
        self._watching = False

    def _daemon_died(self) -> None:
        for fut in self._pending.values():
            if fut is not None and not fut.done():
                fut.set_exception(PeerDied("the daemon's peer registry died"))
        self._pending.clear()

    def drain(self) -> bool:
        """Resolve the futures of arrived replies; True if any arrived."""
        lib, base, no = self.seg.lib, self.seg.base, self.port.no
        got = False
        while (idx := lib.ap_pop_reply(base, no)) >= 0:
            got = True
            fut = self._pending.pop(idx, None)
            if fut is None or fut.done():  # abandoned (cancelled or timed out)
                lib.ap_desc_free(base, idx, D_COMPLETED)
            else:
                fut.set_result(idx)
        return got

    async def call(self, dst: int, op: Op | int, target: str | bytes = "", offset: int = 0,
                   size: int = 0, payload: Payload | None = None, flags: int = 0, arg: int = 0,
                   buf_size: int | None = None, timeout: float | None = None,
                   share: Request | Reply | None = None) -> Reply:
        """Send one request (payload ≤ the arena's max buffer) and return its Reply.

        ``share=req`` borrows the buffer of ``req`` (a Request being served or a Reply
        held) instead of allocating one; the payload defaults to its current data.
        ``req`` must outlive this call (do not let it time out and free the owner).
        """
        if not self._watching:
            self._watching = True
            self.port.attach()
            self.link.on_hangup(asyncio.get_running_loop(), self._daemon_died)
        seg = self.seg
        for attempt in itertools.count():
            try:
                idx = _prepare(seg, self.port.no, op, target, offset, size, payload, flags, arg,
                               buf_size, share)
                break
            except Busy:  # pool or arena exhausted: back-pressure, retry for a while
                if attempt >= BUSY_RETRIES:
                    raise
                await asyncio.sleep(BUSY_SLEEP)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[idx] = fut
        try:
            _submit(seg, self.link, idx, dst, NOWAKE)
        except BaseException:
            self._pending.pop(idx, None)
            raise
        self.port.defer_wake(dst)
        try:
            if timeout is None:
                await fut
            else:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
        except BaseException as exc:
            if fut.done() and not fut.cancelled():  # the reply won the race: free it here
                seg.lib.ap_desc_free(seg.base, idx, D_COMPLETED)
            else:
                self._pending[idx] = None  # drain() frees it when it arrives
            if isinstance(exc, TimeoutError):
                raise TimedOut(f"op {op} to port {dst} timed out after {timeout}s") from None
            raise
        return _finish(seg, idx)

    async def ping(self, dst: int, timeout: float | None = None) -> None:
        """Round-trip a PING to ``dst``."""
        (await self.call(dst, Op.PING, timeout=timeout)).release()

    async def read(self, dst: int, target: str, offset: int, size: int,
                   flags: int = 0) -> bytearray:
        """READ up to 32 MiB, split into arena-sized requests issued concurrently."""
        step = self.seg.max_buffer
        parts = await asyncio.gather(*(
            self.call(dst, Op.READ, target, offset + o, min(step, size - o), flags=flags)
            for o in range(0, size, step)))
        out = bytearray(size)
        for i, r in enumerate(parts):
            with r:
                out[i * step : i * step + len(r.data)] = r.data
        return out

    async def write(self, dst: int, target: str, offset: int, data: Payload, flags: int = 0) -> int:
        """WRITE up to 32 MiB, split like :meth:`read`; returns serviced bytes."""
        mv, step = memoryview(data).cast("B"), self.seg.max_buffer
        parts = await asyncio.gather(*(
            self.call(dst, Op.WRITE, target, offset + o, len(mv[o : o + step]),
                      mv[o : o + step], flags)
            for o in range(0, len(mv), step)))
        total = 0
        for r in parts:
            total += r.serviced
            r.release()
        return total

    def close(self) -> None:
        """Release the port."""
        self.port.close()


class BlockingClient:
    """Thread-safe blocking client: one dynamic port per calling thread."""

    def __init__(self, link: PeerLink, spin: int = 200) -> None:
        self.link = link
        self.seg = link.segment
        self.spin = spin
        self._local = threading.local()
        self._ports: list[Port] = []
        self._lock = threading.Lock()

    def _port(self) -> Port:
        port = getattr(self._local, "port", None)
        if port is None:
            port = Port(self.link)
            self._local.port = port
            with self._lock:
                self._ports.append(port)
        return port

    def _send(self, port: Port, dst: int, op: Op | int, target: str | bytes, offset: int,
              size: int, payload: Payload | None, flags: int, arg: int,
              buf_size: int | None, share: Request | Reply | None) -> int:
        seg = self.seg
        for attempt in itertools.count():
            try:
                idx = _prepare(seg, port.no, op, target, offset, size, payload, flags, arg,
                               buf_size, share)
                break
            except Busy:
                if attempt >= BUSY_RETRIES:
                    raise
                time.sleep(BUSY_SLEEP)
        _submit(seg, self.link, idx, dst)
        return idx

    def _wait(self, port: Port, want: set[int], timeout: float) -> list[int]:
        """Wait (in C, GIL released) until every descriptor in ``want`` completed."""
        seg, lib = self.seg, self.seg.lib
        deadline = time.monotonic() + timeout
        done: list[int] = []
        while want:
            ms = max(0, int((deadline - time.monotonic()) * 1000))
            got = lib.ap_wait_reply(seg.base, port.no, port.efd, self.link.regfd, ms, self.spin)
            if got in want:
                want.discard(got)
                done.append(got)
            elif got >= 0:  # a reply abandoned by an earlier timeout
                lib.ap_desc_free(seg.base, got, D_COMPLETED)
            elif got == -errno.EPIPE:
                raise PeerDied("the daemon's peer registry died")
            else:  # still-pending replies are freed when they arrive later
                for idx in done:
                    lib.ap_desc_free(seg.base, idx, D_COMPLETED)
                raise TimedOut(f"no reply after {timeout}s")
        return done

    def call(self, dst: int, op: Op | int, target: str | bytes = "", offset: int = 0,
             size: int = 0, payload: Payload | None = None, flags: int = 0, arg: int = 0,
             buf_size: int | None = None, timeout: float = 30.0,
             share: Request | Reply | None = None) -> Reply:
        """Send one request and wait for its reply in C (GIL released); see AsyncClient.call."""
        port = self._port()
        idx = self._send(port, dst, op, target, offset, size, payload, flags, arg, buf_size,
                         share)
        self._wait(port, {idx}, timeout)
        return _finish(self.seg, idx)

    def _many(self, dst: int, op: Op, target: str, offset: int, buf: Any, write: bool,
              flags: int, timeout: float) -> list[tuple[int, int]]:
        port, step = self._port(), self.seg.max_buffer
        sent: dict[int, int] = {}
        try:
            for o in range(0, len(buf), step):
                chunk = buf[o : o + step]
                idx = self._send(port, dst, op, target, offset + o, len(chunk),
                                 chunk if write else None, flags, 0, None, None)
                sent[idx] = o
        except BaseException:  # collect and free what was already sent, then fail
            for idx in self._wait(port, set(sent), timeout):
                self.seg.lib.ap_desc_free(self.seg.base, idx, D_COMPLETED)
            raise
        return [(idx, sent[idx]) for idx in self._wait(port, set(sent), timeout)]

    def read_into(self, dst: int, target: str, offset: int, buf: memoryview | bytearray,
                  timeout: float = 30.0) -> int:
        """READ len(buf) bytes (≤ 32 MiB, split and pipelined) into ``buf``; bytes serviced."""
        mv = memoryview(buf).cast("B")

        def land(o: int, r: Reply) -> None:
            mv[o : o + len(r.data)] = r.data

        return self._collect(self._many(dst, Op.READ, target, offset, mv, False, 0, timeout),
                             land)

    def write(self, dst: int, target: str, offset: int, data: Payload, flags: int = 0,
              timeout: float = 30.0) -> int:
        """WRITE ``data`` (≤ 32 MiB, split and pipelined); returns serviced bytes."""
        mv = memoryview(data).cast("B")
        return self._collect(self._many(dst, Op.WRITE, target, offset, mv, True, flags, timeout))

    def _collect(self, parts: list[tuple[int, int]],
                 each: Callable[[int, Reply], None] | None = None) -> int:
        """Finish every part (``each(offset, reply)`` on success), releasing all of them even
        after an error; then raise the first error or return the bytes serviced."""
        total, error = 0, None
        for idx, o in parts:
            try:
                with _finish(self.seg, idx) as r:
                    if each is not None:
                        each(o, r)
                    total += r.serviced
            except Exception as exc:  # noqa: BLE001 - keep releasing the other parts
                error = error or exc
        if error is not None:
            raise error
        return total

    def ping(self, dst: int, timeout: float = 30.0) -> None:
        """Round-trip a PING to ``dst``."""
        self.call(dst, Op.PING, timeout=timeout).release()

    def close(self) -> None:
        """Release every per-thread port."""
        with self._lock:
            for p in self._ports:
                p.close()
            self._ports.clear()
