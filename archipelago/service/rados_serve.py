"""The mapper peer's serving of direct RADOS I/O (rados_io.py): a request started on
RADOS stays in flight without a task and is completed, with every other one whose op
finished, in one pass per wake-up (:meth:`RadosServing.rados_done`)."""

from __future__ import annotations

import asyncio
from typing import Any

from archipelago.peers.ops import Op
from archipelago.peers.peer import BATCH, NOWAKE
from archipelago.peers.request import Request
from archipelago.service.rados_io import DONE, STARTED

_READ, _WRITE = int(Op.READ), int(Op.WRITE)


class RadosServing:
    """Mixed into MapperPeer (before Peer): its ``drain`` takes the RADOS fast path."""

    rio: Any
    stopping: bool
    volumes: dict[str, Any]

    def serve_rados(self, req: Request) -> int:
        """Start a READ/WRITE on RADOS from here (rados_io.py): DONE, STARTED or DECLINE."""
        rio, op = self.rio, req.d.op  # an int: no Op enum built per request
        if rio is None or self.stopping or (op != _READ and op != _WRITE):
            return 0
        v = self.volumes.get(req.target)
        if v is None:
            return 0
        return rio.read(v, req) if op == _READ else rio.write(v, req)

    def drain(self) -> bool:
        """Peer.drain, plus requests started on RADOS here and completed by
        :meth:`rados_done` (counted in flight meanwhile, no task)."""
        if self.rio is None or self.rio.batch is None:
            return super().drain()
        lib, base, no = self.seg.lib, self.seg.base, self.port.no
        efds, nfds = self._efd_arr, len(self.link.efds)
        n, woken = 0, set()
        while self.inflight < self.max_inflight and n < BATCH:
            idx = lib.ap_pop_request_fast(base, no, efds, nfds)
            if idx < 0:
                break
            n += 1
            req = Request(self.seg, idx, no)
            try:
                how = self.serve_rados(req)
            except Exception:  # noqa: BLE001 - declined: dispatch redoes it and reports
                how = 0
            if how == DONE:
                self.metrics.done(req.op.name, None, False)
                woken.add(req.d.owner)
                lib.ap_complete(base, idx, NOWAKE)
                self.served += 1
                continue
            self.inflight += 1
            if how != STARTED:
                self._spawn(req)
        for owner in woken:
            lib.ap_wake(base, owner, self.link.efds[owner])
        return n > 0

    def _spawn(self, req: Request) -> None:
        task = asyncio.get_running_loop().create_task(self._run(req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def rados_done(self, done: list[tuple[Any, int]]) -> None:
        """Complete the requests whose RADOS ops finished (one pass per wake-up); a failed
        one is redone by :meth:`dispatch` (it stays in flight)."""
        rio = self.rio
        lib, base, efds = self.seg.lib, self.seg.base, self.link.efds
        woken, counts = set(), [0, 0]
        for token, rv in done:
            req = token[0]
            try:
                ok = rio is not None and rio.finish(token, rv)
            except Exception:  # noqa: BLE001 - the mapper path redoes it and reports
                ok = False
            if not ok:
                self._spawn(req)
                continue
            counts[token[2]] += 1  # token: (request, volume, is_write)
            woken.add(req.d.owner)
            lib.ap_complete(base, req.idx, NOWAKE)
        n = counts[0] + counts[1]
        self.inflight -= n
        self.served += n
        for owner in woken:
            lib.ap_wake(base, owner, efds[owner])
        for name, k in (("READ", counts[0]), ("WRITE", counts[1])):
            if k:  # one metrics update per batch, not per request
                self.metrics._children(name)[0].inc(k)  # noqa: SLF001
        self.port.kick()  # below max_inflight again: take more requests
