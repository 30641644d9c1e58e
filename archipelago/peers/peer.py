"""The peer framework: bind a port, pull requests, run ``dispatch`` with bounded concurrency.

Subclass :class:`Peer` and override ``async def dispatch(self, req)``: read
``req.op/target/offset/size/data``, answer with ``req.reply(...)`` or raise an
ArchipelagoError (its code and errno travel back). PING is answered inline.
"""

from __future__ import annotations

import asyncio
import logging
import time

from archipelago.errors import ArchipelagoError, NotSupported, PeerDied
from archipelago.metrics import PeerMetrics
from archipelago.peers.ops import Op
from archipelago.peers.port import Port
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Request

log = logging.getLogger(__name__)
BATCH = 64
NOWAKE = -2  # AP_NOWAKE: complete now, signal the client once per batch
#: serve_inline's answers: run ``dispatch`` in a task; answered; started elsewhere (it stays
#: in flight, no task, and its owner completes it later, e.g. a batch of RADOS ops)
SPAWN, DONE, STARTED = 0, 1, 2
_DATA_IN = (Op.WRITE, Op.CREATE)


class Peer:
    """A server on one port; ``max_inflight`` bounds concurrent dispatches."""

    #: Label of this peer's metrics (archipelago.metrics).
    role = "peer"

    def __init__(self, link: PeerLink, port: int | Port | None = None,
                 max_inflight: int = 64) -> None:
        self.link = link
        self.port = port if isinstance(port, Port) else Port(link, port)
        self.port.server = self
        self.seg = link.segment
        self.max_inflight = max_inflight
        self.inflight = 0
        self._stopped: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._efd_arr = self.seg.ffi.new("int[]", link.efds)
        self._pings = self.seg.ffi.new("uint64_t[1]")  # PINGs the C pop answered
        self.served = 0
        self.metrics = PeerMetrics(self.role)

    @property
    def wants_requests(self) -> bool:
        """True while below the in-flight bound."""
        return self.inflight < self.max_inflight

    async def dispatch(self, req: Request) -> None:
        """Serve one request (override); PING never reaches it (answered in C)."""
        raise NotSupported(f"op {req.op.name} not supported by {type(self).__name__}")

    def serve_inline(self, req: Request) -> int:
        """Answer ``req`` synchronously if that is cheap (override): DONE (or True) when
        answered, STARTED when it completes later without a task, SPAWN (or False): run
        ``dispatch``.

        Must not block; may be attempted and declined (nothing visible done). Saves the
        task and a loop iteration per request, and the reply's wake-up goes out at the
        end of this drain instead of one iteration later.
        """
        return SPAWN

    def drain(self) -> bool:
        """Pull up to a batch of requests; True if any were taken."""
        lib, base, no = self.seg.lib, self.seg.base, self.port.no
        n = 0
        efds, nfds = self._efd_arr, len(self.link.efds)
        woken: set[int] = set()
        pings = self._pings
        pings[0] = 0
        while self.inflight < self.max_inflight and n < BATCH:
            # PINGs are answered inside the C call; it returns the next other request
            idx = lib.ap_pop_request_fast(base, no, efds, nfds, pings)
            if idx < 0:
                break
            n += 1
            req = Request(self.seg, idx, no)
            try:
                how = int(self.serve_inline(req))
            except Exception:  # noqa: BLE001 - declined: dispatch redoes it and reports
                how = SPAWN
            if how == DONE:
                self.metrics.done(req.op.name, None, False)
                owner = req.d.owner
                lib.ap_complete(base, idx, NOWAKE)
                woken.add(owner)
                self.served += 1
                continue
            self.inflight += 1
            if how != STARTED:
                self.spawn(req)
        if pings[0]:  # answered in C: progress too (the pump spins again, not naps)
            n += pings[0]
            self.served += pings[0]
        for owner in woken:  # one wake-up per client per batch, sent now
            lib.ap_wake(base, owner, self.link.efds[owner])
        return n > 0

    def spawn(self, req: Request) -> None:
        """Serve ``req`` (counted in flight) through ``dispatch`` in a task."""
        task = asyncio.get_running_loop().create_task(self._run(req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, req: Request) -> None:
        t0, failed, op = time.perf_counter(), True, req.op
        self.metrics.inflight.inc()
        try:
            await self.dispatch(req)
            failed = False
        except ArchipelagoError as exc:
            req.fail(exc)
        except asyncio.CancelledError:
            req.fail(PeerDied(f"{type(self).__name__} stopped before answering"))
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in dispatch fails one request only
            log.exception("dispatch of %s failed", req.op.name)
            req.fail(ArchipelagoError(f"{type(exc).__name__}: {exc}"))
        finally:
            self.metrics.inflight.dec()
            nbytes = req.size if op == Op.READ else (len(req.data) if op in _DATA_IN else 0)
            self.metrics.done(op.name, time.perf_counter() - t0, failed, nbytes)
            lib, base = self.seg.lib, self.seg.base
            owner = req.d.owner
            lib.ap_complete(base, req.idx, NOWAKE)
            self.port.defer_wake(owner)
            self.inflight -= 1
            self.served += 1
            self.port.kick()

    async def serve(self) -> None:
        """Serve until :meth:`stop` is called or the daemon's registry goes away."""
        self._stopped = asyncio.Event()
        self.port.attach()
        self.link.on_hangup(asyncio.get_running_loop(), self.stop)  # the daemon died
        try:
            await self._stopped.wait()
        finally:
            for t in list(self._tasks):
                t.cancel()
            self.port.detach()

    def stop(self) -> None:
        """Ask :meth:`serve` to return."""
        if self._stopped is not None:
            self._stopped.set()

    def close(self) -> None:
        """Release the port."""
        self.port.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port.no} inflight={self.inflight}>"

