"""The mapper peer: volumes (archipelago.mapper) served on the segment (process: mapper_main.py).

Wire protocol on port wire.MAPPER_PORT (target = volume name unless noted):
READ (offset, size → data) · WRITE (offset, payload, FUA flag) · FLUSH · ZERO/TRIM
(offset, size, FUA flag) · EXTENTS (offset, size → msgpack [[offset, length, zero], ...])
· CREATE (target = 64-hex content name, payload = the block: store it if absent; used
by import, the sender computed the name) · CTRL (msgpack {"op": ..., args} → msgpack
result): create, open, close, info, list, snapshot, clone, clone_hashmap, hash, hashmap,
resize, rename, remove, lock, unlock, missing, status, locate (entries for a client
map cache, see docs/fastpath.md), diff. I/O ops need the volume open through this peer. Objects
go to the blocker peers through a SpreadBlocker (re-issues requests of a dead peer).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import msgpack

from archipelago.blockaccess.coherence import GenPage
from archipelago.errors import ArchipelagoError, InvalidArgument, Locked, NotFound, NotRunning, StaleHandle
from archipelago.mapper import Mapper, Volume
from archipelago.mapper.usage import usage
from archipelago.peers.ops import Flag, Op
from archipelago.peers.peer import Peer
from archipelago.peers.port import Port
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Request
from archipelago.service.direct_io import DirectIO, fast_io
from archipelago.service.forward import CURRENT, serve_read
from archipelago.service.rados_io import RadosIO
from archipelago.service.rados_serve import RadosServing
from archipelago.service.spread import SpreadBlocker
from archipelago.upkeep.diff import map_diff
from archipelago.wire import DEFAULT_BLOCK_SIZE, decode_hashes, encode_extents, encode_hashes

log = logging.getLogger("archipelago.mapper-peer")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: Seconds between sweeps closing handles of clients whose port went away.
SWEEP = 2.0


@dataclass
class Handle:
    """One client's open of a volume."""

    name: str
    volume: Volume
    src: int
    gen: int


class MapperPeer(RadosServing, Peer):
    """Serve volume I/O and volume operations from one Mapper."""

    role = "mapper"

    def __init__(self, link: PeerLink, port: Port, mapper: Mapper, spread: SpreadBlocker,
                 max_inflight: int) -> None:
        super().__init__(link, port, max_inflight)
        self.mapper = mapper
        self.spread = spread
        self.handles: dict[int, Handle] = {}
        self.volumes: dict[str, Volume] = {}
        self._ids = itertools.count(1)
        self.stopping = False
        self.started = time.time()
        self.fast: DirectIO | None = None
        self.gens: GenPage | None = None
        self.rio: RadosIO | None = None  # direct small I/O on RADOS (rados_io.py)

    def _vol(self, name: str) -> Volume:
        v = self.volumes.get(name)
        if v is None:
            raise StaleHandle(f"volume {name!r} is not open here (open it again)")
        return v

    def serve_inline(self, req: Request) -> int:
        """Fast reads and in-place writes of cached, owned blocks, without a task (on
        RADOS: started there and completed by rados_done)."""
        if self.rio is not None and self.rio.batch is not None:
            return self.serve_rados(req)
        fast = self.fast
        if fast is None or self.stopping:
            return False
        op = req.op
        if op == Op.READ:
            v = self.volumes.get(req.target)
            if v is not None and fast.read_into(v, req.reply_buffer(req.size), req.offset):
                req.reply(serviced=req.size)
                return True
        elif op == Op.WRITE:
            v, data = self.volumes.get(req.target), req.data
            if v is not None and fast.write_from(v, data, req.offset, bool(req.flags & Flag.FUA)):
                req.reply(serviced=len(data))
                return True
        return False

    async def dispatch(self, req: Request) -> None:
        """Serve one request."""
        if self.stopping:
            raise NotRunning("the daemon is stopping")
        op, fua = req.op, bool(req.flags & Flag.FUA)
        if op == Op.READ:
            await serve_read(self.fast, self._vol(req.target), self.spread, req)
        elif op in (Op.WRITE, Op.ZERO, Op.TRIM):
            v = self._vol(req.target)
            try:  # the map may change (copy-up, allocation, zero entry): even if we fail
                if op == Op.WRITE:
                    CURRENT.set(req)  # our task's context: the blockers borrow req's buffer
                    await v.write(req.offset, req.data, fua=fua)
                    req.reply(serviced=len(req.data))
                else:
                    await v.zero(req.offset, req.size, fua=fua)  # trim = zero here
            finally:
                self.bump(req.target)
        elif op == Op.FLUSH:
            v = self._vol(req.target)
            if self.fast is not None:
                await self.fast.flush()
            await v.flush()
        elif op == Op.EXTENTS:
            exts = await self._vol(req.target).extents(req.offset, req.size)
            req.reply(encode_extents(exts))
        elif op == Op.CREATE:
            await self._put_block(req)
        elif op == Op.CTRL:
            args = msgpack.unpackb(bytes(req.data)) if len(req.data) else {}
            if not isinstance(args, dict) or not isinstance(args.get("op"), str):
                raise InvalidArgument("CTRL payload must be a msgpack map with an 'op'")
            result = await self._ctrl(req, args)
            req.reply(msgpack.packb(result, use_bin_type=True))
        else:
            raise InvalidArgument(f"the mapper peer does not do {op.name}")

    async def _put_block(self, req: Request) -> None:
        """Store a content-addressed block unless present (the client named it)."""
        name = req.target
        if not _HEX64.match(name):
            raise InvalidArgument(f"not a content name: {name!r}")
        if len(req.data) == 0 or len(req.data) > 4 * 1024 * 1024:
            raise InvalidArgument("a content block holds 1 byte to 4 MiB")
        if await self.spread.touch(name):  # dedup hit: young again, spared by GC
            req.reply(arg=0)
            return
        await self.spread.put(name, req.data, fua=False)
        req.reply(arg=1)

    async def _ctrl(self, req: Request, a: dict[str, Any]) -> Any:
        m, op = self.mapper, a["op"]
        if op == "create":
            return (await m.create(a["name"], int(a["size"]),
                                   int(a.get("block_size") or DEFAULT_BLOCK_SIZE),
                                   internal=bool(a.get("internal")))).to_dict()
        if op == "open":
            return await self._open(req, a["name"], bool(a.get("force")))
        if op == "close":
            await self._close(int(a["handle"]))
            return None
        if op == "info":
            return (await m.info(a["name"])).to_dict()
        if op == "list":
            return [i.to_dict() for i in await m.list(internal=bool(a.get("internal")))]
        if op == "snapshot":
            async with self.excl(a["volume"]):  # no client in-place write lands meanwhile
                if self.fast is not None:  # in-place writes durable like the blockers' own
                    await self.fast.flush()
                return (await m.snapshot(a["volume"], a["snap"],
                                         internal=bool(a.get("internal")))).to_dict()
        if op == "clone":
            return (await m.clone(a["source"], a["new"], a.get("size"),
                                  internal=bool(a.get("internal")))).to_dict()
        if op == "clone_hashmap":
            hashes = decode_hashes(a["hashes"])
            return (await m.clone_hashmap(a["new"], hashes, int(a["nbytes"]),
                                          a.get("size"), bool(a.get("readonly")))).to_dict()
        if op == "hash":
            return (await m.hash(a["snap"])).to_dict()
        if op == "hashmap":
            hashes, nbytes = await m.hashmap(a["name"])
            return {"hashes": encode_hashes(hashes), "bytes": nbytes}
        if op == "usage":
            return await usage(m, a["name"])
        if op == "resize":
            async with self.excl(a["name"]):
                return (await m.resize(a["name"], int(a["size"]))).to_dict()
        if op == "locate":
            return await self._locate(a["name"], int(a["first"]), int(a["count"]))
        if op == "rename":
            return (await m.rename(a["old"], a["new"])).to_dict()
        if op == "remove":
            await m.remove(a["name"], internal=bool(a.get("internal")))
            return None
        if op == "lock":
            await m.lock(a["name"])
            return None
        if op == "unlock":
            await m.unlock(a["name"], bool(a.get("force")))
            return None
        if op == "missing":
            names: list[str] = a["names"]
            present = await asyncio.gather(*(self.spread.touch(n) for n in names))  # dedup: GC
            return [n for n, p in zip(names, present, strict=True) if not p]
        if op == "status":
            return self.status()
        if op == "diff":  # changed extents between two maps (archipelago/upkeep/diff.py)
            return await map_diff(m, a["frm"], a["to"])
        raise InvalidArgument(f"unknown volume op {op!r}")

    async def _open(self, req: Request, name: str, force: bool) -> dict[str, Any]:
        try:
            v = await self.mapper.open(name, force=force)
        except Locked:
            info = await self.mapper.info(name)
            if not info.lock_stale:
                raise
            log.warning("broke stale lock of volume %r held by %s (dead process on this host)",
                        name, info.lock_owner)
            v = await self.mapper.open(name, force=True)
        self.volumes[name] = v
        hid = next(self._ids)
        _, _, gen = self.seg.port_state(req.src)
        self.handles[hid] = Handle(name, v, req.src, gen)
        return {"handle": hid, "info": v.info.to_dict()}

    async def _close(self, hid: int) -> None:
        h = self.handles.pop(hid, None)
        if h is None:
            raise NotFound(f"no open handle {hid}")
        try:
            if self.fast is not None:
                await self.fast.flush()
            await h.volume.close()
        finally:
            if not any(x.name == h.name for x in self.handles.values()):
                self.volumes.pop(h.name, None)
            self.bump(h.name)

    def bump(self, name: str) -> None:
        """Invalidate clients' cached entries of volume ``name`` (docs/fastpath.md)."""
        if self.gens is not None:
            self.gens.bump(name)

    def excl(self, name: str) -> Any:
        """Keep clients' in-place writes of ``name`` out (an async context manager)."""
        return self.gens.exclusive(name) if self.gens is not None else nullcontext()

    async def _locate(self, name: str, first: int, count: int) -> dict[str, Any]:
        """Entries for a client's map cache, with the generation they are valid for."""
        v = self._vol(name)
        if self.fast is None or self.gens is None:
            from archipelago.errors import NotSupported

            raise NotSupported("no client-side map cache on this blocker")
        return await self.fast.locate(v, self.gens, first, count)

    async def sweep(self) -> None:
        """Close handles whose client port was released or reclaimed (the client died)."""
        while True:
            await asyncio.sleep(SWEEP)
            for hid, h in list(self.handles.items()):
                state, _, gen = self.seg.port_state(h.src)
                if state != 1 or gen != h.gen:
                    log.info("client on port %d went away: closing its handle of %r",
                             h.src, h.name)
                    try:
                        await self._close(hid)
                    except ArchipelagoError as e:
                        log.warning("closing %r: %s", h.name, e.message)

    def status(self) -> dict[str, Any]:
        """Open volumes and requests in flight."""
        opened: dict[str, int] = {}
        for h in self.handles.values():
            opened[h.name] = opened.get(h.name, 0) + 1
        return {
            "pid": os.getpid(),
            "owner": self.mapper.owner,
            "port": self.port.no,
            "inflight": max(0, self.inflight - 1),  # minus this status request
            "served": self.served,
            "open_volumes": [{"name": n, "handles": c, "writable": self.volumes[n].writable}
                             for n, c in sorted(opened.items()) if n in self.volumes],
            "blockers": self.spread.stats(),
            "reissued": self.spread.reissued,
            "fast_reads": self.fast.hits if self.fast is not None else None,
            "fast_writes": self.fast.writes if self.fast is not None else None,
            "fast_io": fast_io(self.fast),
            "peer_port": self.port.stats(),  # wake-ups, completion batches, adaptive spins
            "rados_io": self.rio.stats() if self.rio is not None else None,
        }

    async def _close_all(self) -> None:
        if self.fast is not None:
            await self.fast.flush()
        await self.mapper.close()
        await self.spread.flush()
        if self.rio is not None:
            await self.rio.close()

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Refuse new requests, drain those in flight, close volumes (flush, unlock)."""
        self.stopping = True
        deadline = time.monotonic() + timeout
        while self.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.inflight:
            log.warning("%d requests still in flight after %.0fs", self.inflight, timeout)
        try:
            # Bounded: blocker peers that exit with a killed supervisor may never answer.
            await asyncio.wait_for(self._close_all(), max(1.0, deadline - time.monotonic()))
        except (TimeoutError, ArchipelagoError) as e:
            log.warning("volumes not closed cleanly (%s); their locks go stale with this pid", e)
        self.handles.clear()
        self.volumes.clear()
        self.stop()
