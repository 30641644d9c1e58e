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
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from archipelago.errors import ArchipelagoError, Busy, PeerDied, TimedOut
from archipelago.peers.calls import (
    _ABANDONED,
    BATCH,
    BUSY_RETRIES,
    BUSY_SLEEP,
    MAX_REQUEST,  # noqa: F401 - re-exported: part of this module's API
    NOWAKE,
    Payload,
    _build,
    _finish,
    _ids,
    _prepare,
    _run_callback,
    _submit,
)
from archipelago.peers.ops import Op
from archipelago.peers.port import Port
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import D_COMPLETED, Reply, Request

log = logging.getLogger(__name__)
_READ = int(Op.READ)


class AsyncClient:
    """Submit requests from an asyncio loop; replies resolve futures or run callbacks.

    The completion table is a list indexed by descriptor: ``call`` parks a future there,
    ``submit`` a callback (no Task or Future per request). The port's pump pops every
    arrived reply in batches of ``BATCH`` per native call and signals each server once
    per batch of submissions (see :class:`~archipelago.peers.port.Port`).
    """

    def __init__(self, link: PeerLink, port: Port | None = None) -> None:
        self.link = link
        self.seg = link.segment
        self.port = port or Port(link)
        self.port.client = self
        self._table: list[Any] = [None] * int(self.seg.hdr.nr_desc)
        self._out = self.seg.ffi.new("int64_t[]", BATCH)
        self._free, self._base = self.seg.lib.ap_desc_free, self.seg.base
        self._watching = False
        self.completions = 0
        self.batches = 0

    def _daemon_died(self) -> None:
        table = self._table
        for idx, ent in enumerate(table):
            if ent is None:
                continue
            table[idx] = None
            if ent is _ABANDONED:
                continue
            if isinstance(ent, asyncio.Future):
                if not ent.done():
                    ent.set_exception(PeerDied("the daemon's peer registry died"))
            else:
                _run_callback(ent, -errno.EPIPE)

    @property
    def pending(self) -> int:
        """Requests submitted whose replies were not drained yet (abandoned ones included)."""
        return sum(ent is not None for ent in self._table)

    def _claim(self, idx: int, entry: Any) -> None:
        if self._table[idx] is not None:  # the pool handed out a descriptor we still track
            self.seg.lib.ap_desc_free(self.seg.base, idx, 1)
            raise ArchipelagoError(f"descriptor {idx} handed to two requests")
        self._table[idx] = entry

    def drain(self) -> bool:
        """Pop every arrived reply (batches of BATCH per native call); True if any arrived."""
        lib, base, no, out, table = self.seg.lib, self.seg.base, self.port.no, self._out, \
            self._table
        got, unpack, future = False, self.seg.ffi.unpack, asyncio.Future
        while (n := lib.ap_pop_replies(base, no, out, BATCH)) > 0:
            got = True
            self.batches += 1
            self.completions += n
            for idx in unpack(out, n):  # one call for the whole batch
                ent = table[idx]
                table[idx] = None
                if ent is None or ent is _ABANDONED:  # cancelled or timed out: free it
                    lib.ap_desc_free(base, idx, D_COMPLETED)
                elif isinstance(ent, future):
                    if ent.done():
                        lib.ap_desc_free(base, idx, D_COMPLETED)
                    else:
                        ent.set_result(idx)
                else:
                    try:  # inlined _run_callback: one call less per completion
                        ent(idx)
                    except Exception:  # noqa: BLE001 - one bug must not lose the others
                        log.exception("completion callback for descriptor %d failed", idx)
            if n < BATCH:
                break
        return got

    def _start(self) -> None:
        self._watching = True
        self.port.attach()
        self.link.on_hangup(asyncio.get_running_loop(), self._daemon_died)

    def submit(self, dst: int, op: Op | int, target: str | bytes = b"", offset: int = 0,
               size: int = 0, payload: Payload | None = None, flags: int = 0, arg: int = 0,
               buf_size: int | None = None, *, done: Callable[[int], None]) -> int:
        """Build and queue one request in one native call; ``done(idx)`` runs on its reply.

        The hot path: no Task or Future. ``idx >= 0`` is the completed descriptor: take it
        with :meth:`reply` (raises the request's error) or :meth:`release` it; ``idx < 0``
        (-EPIPE) means the daemon died and there is nothing to free. The server is
        signalled once per loop iteration for everything submitted meanwhile. Raises Busy
        when the pool, the arena or the server's ring is full (no retry here).
        """
        if not self._watching:
            self._start()
        seg = self.seg
        if payload is None and buf_size is None and op != _READ and type(target) is bytes \
                and offset >= 0 and size >= 0:  # no buffer: the fields alone, inlined
            idx = seg.lib.ap_request_submit(seg.base, self.port.no, dst, op, flags, offset, size,
                                            arg, next(_ids), target, len(target), 0,
                                            seg.ffi.NULL, 0)
            if idx < 0:  # let the general path free nothing and raise the right error
                idx = _build(seg, self.port.no, dst, op, target, offset, size, payload, flags,
                             arg, buf_size)
        else:
            idx = _build(seg, self.port.no, dst, op, target, offset, size, payload, flags, arg,
                         buf_size)
        table = self._table
        if table[idx] is not None:
            self._claim(idx, done)  # raises: the descriptor is still tracked
        table[idx] = done
        port = self.port
        if dst not in port._wake:
            port.defer_wake(dst)
        return idx

    def reply(self, idx: int) -> Reply:
        """The Reply of a completed descriptor handed to a ``submit`` callback."""
        return _finish(self.seg, idx)

    def release(self, idx: int) -> None:
        """Free a completed descriptor handed to a ``submit`` callback without reading it."""
        self._free(self._base, idx, D_COMPLETED)

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
            self._start()
        seg = self.seg
        for attempt in itertools.count():
            try:
                if share is None:
                    idx = _build(seg, self.port.no, dst, op, target, offset, size, payload,
                                 flags, arg, buf_size)
                else:
                    idx = _prepare(seg, self.port.no, op, target, offset, size, payload, flags,
                                   arg, buf_size, share)
                    _submit(seg, self.link, idx, dst, NOWAKE)
                break
            except Busy:  # pool, arena or ring full: back-pressure, retry for a while
                if attempt >= BUSY_RETRIES:
                    raise
                await asyncio.sleep(BUSY_SLEEP)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._claim(idx, fut)
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
                self._table[idx] = _ABANDONED  # drain() frees it when it arrives
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
