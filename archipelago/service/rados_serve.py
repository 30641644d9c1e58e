"""The mapper peer's serving of direct RADOS I/O (rados_io.py): a request started on
RADOS (serve_inline answers STARTED to Peer.drain) stays in flight without a task and is
completed, with every other one whose op finished, in one pass per wake-up
(:meth:`RadosServing.rados_done`)."""

from __future__ import annotations

from typing import Any

from archipelago.peers.ops import Op
from archipelago.peers.peer import NOWAKE, SPAWN
from archipelago.peers.request import Request

_READ, _WRITE = int(Op.READ), int(Op.WRITE)


class RadosServing:
    """Mixed into MapperPeer (before Peer): requests Peer.drain hands to serve_rados and
    the completion pass of those it started."""

    rio: Any
    stopping: bool
    volumes: dict[str, Any]

    def serve_rados(self, req: Request) -> int:
        """Start a READ/WRITE on RADOS from here (rados_io.py): DONE, STARTED or SPAWN."""
        rio, op = self.rio, req.d.op  # an int: no Op enum built per request
        if rio is None or self.stopping or (op != _READ and op != _WRITE):
            return SPAWN
        v = self.volumes.get(req.target)
        if v is None:
            return SPAWN
        return rio.read(v, req) if op == _READ else rio.write(v, req)

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
                self.spawn(req)
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
