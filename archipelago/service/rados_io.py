"""The mapper peer's direct small I/O on RADOS: reads of cached entries and in-place
writes of owned blocks go to librados from the mapper peer, not through a blocker peer.

Through the blocker peers a 4 KiB request costs two Python hops (mapper task, blocker
task) and a segment round trip between them. Here the mapper plans the request from
the map chunks it holds (blockaccess.locate, the rules of docs/fastpath.md), starts
the librados aio op from its own data client straight on the request's segment
buffer, and completes every request whose op finished in one pass per wake-up
(blocker.rados_batch). Anything else, or any failure, goes the mapper's usual way.

Writes: only into blocks the volume owns at its epoch (no copy-up, no allocation),
with the volume's Drain held until the op completes (a snapshot or close waits for
it, so no write lands in a block a snapshot shares), and only once the data client's
address is registered as a writer of the map at the volume's granted generation (the
mapper's RadosFence registers every published address: a takeover's bump blocklists
this client too, so it can no longer write). The write asserts the object exists:
a block zeroed meanwhile is not recreated (ENOENT: the mapper path allocates).
A blocklisted data client (ESHUTDOWN) is replaced by a new one; until that one is
registered, writes take the mapper path, which reports Fenced if the map was taken.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from typing import Any

from archipelago.blockaccess.locate import Locator
from archipelago.blockaccess.objects import zero_fill
from archipelago.blocker.rados_batch import AioBatch
from archipelago.peers.peer import DONE, SPAWN, STARTED
from archipelago.peers.request import Request

log = logging.getLogger("archipelago.mapper-peer")
#: The data client's address file in the blocker peers' CLIENTS_DIR (registered with theirs).
ADDR_NAME = "mapper"
DECLINE = SPAWN  # Peer.serve_inline's answers: the mapper path does it
#: Larger requests go through the blocker peers: their librados clients (one messenger
#: thread each) copy big payloads in parallel, where this one client would serialize
#: them (4 MiB reads ran at 0.6x of the blocker peers' path through it).
DIRECT_MAX = 256 * 1024


class RadosIO:
    """Direct reads and in-place writes of the mapper peer on its own RADOS client."""

    def __init__(self, cfg: Any, clients_dir: str, rfence: Any) -> None:
        self.cfg = cfg
        self.dir = clients_dir
        self.rfence = rfence  # the mapper's RadosFence (registers our address too)
        self.blk: Any = None  # the data client (a RadosBlocker)
        self.addr = ""
        self.batch: AioBatch | None = None
        self.locator = Locator(lambda name: name.encode())  # entry -> object name (bytes)
        self.reads = self.writes = self.misses = 0
        self._old: list[Any] = []  # blocklisted clients, closed at close()
        self._renew: asyncio.Task[None] | None = None
        self._on_batch: Any = None

    async def start(self, on_batch: Any) -> bool:
        """Connect a data client and publish its address; False: no direct path here."""
        from archipelago.blocker import open_blocker
        from archipelago.blocker.rados_fence import publish_addr

        self._on_batch = on_batch
        blk = open_blocker(self.cfg)
        await blk.open()
        direct = blk._direct  # noqa: SLF001 - the ioctx pointer of its python3-rados Ioctx
        if direct is None:
            await blk.close()
            return False
        addr = str(blk._cluster.get_addrs())  # noqa: SLF001
        publish_addr(self.dir, ADDR_NAME, addr)
        self.blk, self.addr = blk, addr
        self.batch = AioBatch(direct.ptr, asyncio.get_running_loop(), on_batch)
        return True

    def read(self, vol: Any, req: Request) -> int:
        """Start a READ of one block piece of at most DIRECT_MAX bytes (DONE for a hole);
        DECLINE: the mapper path."""
        batch = self.batch
        n, off = req.size, req.offset
        if batch is None or vol.closed or not 0 < n <= DIRECT_MAX or off + n > vol.header.size:
            return DECLINE
        plan = self.locator.read_plan(vol, off, n)
        if plan is None or len(plan) != 1:
            return DECLINE
        oid, o, _, _ = plan[0]
        buf = req.reply_buffer(n)
        if not oid:  # a zero entry
            zero_fill(buf, 0, n)
            req.reply(serviced=n)
            self.reads += 1
            return DONE
        batch.read(oid, buf, o, (req, vol, False))
        return STARTED

    def write(self, vol: Any, req: Request) -> int:
        """Start a WRITE of at most DIRECT_MAX bytes into one owned block; DECLINE: the
        mapper path."""
        batch = self.batch
        if batch is None or not vol.may_write_in_place():
            return DECLINE
        fence = vol.fence
        if fence is None or not self.rfence.registered(fence[0], fence[1], self.addr):
            return DECLINE  # the mapper path registers us (ensure) for the next ones
        data = req.data
        n, off = len(data), req.offset
        if not 0 < n <= DIRECT_MAX or off + n > vol.header.size:
            return DECLINE
        plan = self.locator.write_plan(vol, off, data)
        if plan is None or len(plan) != 1 or not vol.drain.try_enter():
            return DECLINE
        try:
            batch.write_existing(plan[0][0], data, plan[0][1], (req, vol, True))
        except BaseException:
            vol.drain.leave()
            raise
        return STARTED

    def finish(self, token: tuple[Request, Any, bool], rv: int) -> bool:
        """Complete a started request's reply; False: redo it the mapper's way."""
        req, vol, write = token
        if write:
            vol.drain.leave()
        if rv < 0:
            self.misses += 1
            if rv == -errno.ESHUTDOWN:
                self.blocklisted()
            return False
        if write:
            self.writes += 1
            req.reply(serviced=req.d.data_len)
            return True
        n = req.size
        if rv < n:  # the object ends early: zeros, never stale bytes
            zero_fill(req.reply_buffer(n), rv, n)
        self.reads += 1
        req.reply(serviced=n)
        return True

    def blocklisted(self) -> None:
        """Our data client was blocklisted (a takeover): stop using it, connect anew."""
        if self.batch is None or self._renew is not None:
            return
        log.warning("mapper peer: RADOS data client blocklisted; reconnecting")
        self.batch = None
        self._old.append(self.blk)
        self._renew = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            await self.start(self._on_batch)
        except Exception as e:  # noqa: BLE001 - stay on the mapper path
            log.warning("mapper peer: no new RADOS data client (%s): direct I/O off", e)
        finally:
            self._renew = None

    def stats(self) -> dict[str, int]:
        """Requests served directly, and those sent back to the mapper path."""
        return {"reads": self.reads, "writes": self.writes, "fallbacks": self.misses}

    async def close(self) -> None:
        """Disconnect the data clients (call once no request is in flight)."""
        self.batch = None
        for blk in [*self._old, self.blk]:
            if blk is not None:
                await blk.close()
        self._old, self.blk = [], None


async def make_rados_io(cfg: Any, run_dir: str, rfence: Any, on_batch: Any) -> RadosIO | None:
    """The mapper's RadosIO on the rados backend (None elsewhere, or when disabled by
    ARCHIPELAGO_RADOS_NO_FAST=1, or when librados' raw ioctx is not reachable)."""
    if (cfg.blocker.backend != "rados" or rfence is None
            or os.environ.get("ARCHIPELAGO_RADOS_NO_FAST") == "1"):
        return None
    from archipelago.blocker.rados_fence import CLIENTS_DIR

    rio = RadosIO(cfg, os.path.join(run_dir, CLIENTS_DIR), rfence)
    return rio if await rio.start(on_batch) else None
