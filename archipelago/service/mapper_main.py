"""The mapper peer's process: wait for the blocker peers, break dead owners' locks, then
serve volumes (mapper_peer.MapperPeer) on MAPPER_PORT until SIGTERM.

Run by the supervisor as ``python -m archipelago.service.mapper_main``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from typing import Any

from archipelago.blockaccess.coherence import GenPage
from archipelago.blocker.base import make_owner
from archipelago.errors import ArchipelagoError, NotRunning
from archipelago.mapper import Mapper
from archipelago.peers.client import AsyncClient
from archipelago.peers.port import Port
from archipelago.peers.registry import PeerLink
from archipelago.service import upkeep_tasks
from archipelago.service.direct_io import make_direct_io
from archipelago.service.fences import fence_files, rados_fence
from archipelago.service.mapper_peer import MapperPeer
from archipelago.service.peer_process import blocker_ports, child_args, load, run_child
from archipelago.service.rados_io import make_rados_io
from archipelago.service.spread import SpreadBlocker
from archipelago.wire import MAPPER_PORT

log = logging.getLogger("archipelago.mapper-peer")



async def break_stale_locks(mapper: Mapper) -> int:
    """Break volume locks whose owner is a dead process on this host; returns the count."""
    n = 0
    for vi in await mapper.list(internal=True):
        if vi.readonly:
            continue
        info = await mapper.info(vi.name)
        if info.lock_owner and info.lock_stale:
            await mapper.unlock(vi.name, force=True)
            log.warning("broke stale lock of volume %r held by %s (dead process on this host)",
                        vi.name, info.lock_owner)
            n += 1
    return n


async def wait_blockers(client: AsyncClient, ports: list[int], timeout: float = 30.0) -> None:
    """Wait until every blocker peer answers a PING."""
    deadline = time.monotonic() + timeout
    for p in ports:
        while True:
            try:
                await client.ping(p, timeout=1.0)
                break
            except ArchipelagoError:
                if time.monotonic() > deadline:
                    raise NotRunning(f"blocker peer on port {p} did not come up") from None
                await asyncio.sleep(0.05)


async def serve(args: Any) -> int:
    """Bind the mapper port and serve until SIGTERM (then drain and close)."""
    inst, cfg = load(args)
    link = PeerLink(str(inst.control_socket))
    ports = blocker_ports(args.blockers)
    peer: MapperPeer | None = None
    try:
        owner = make_owner("mapper")
        probe = AsyncClient(link)
        await wait_blockers(probe, ports)
        fast = make_direct_io(cfg)
        fences = fence_files(cfg, fast)  # breaking a lock bumps its fence (docs/fencing.md)
        rfence = rados_fence(cfg, str(inst.run_dir))
        # Before clients can reach us: a reopening client must find a dead mapper's locks broken.
        n = await break_stale_locks(Mapper(SpreadBlocker(probe, ports, fences=fences,
                                                         rfence=rfence), owner))
        probe.close()
        port = Port(link, MAPPER_PORT)  # serves clients and submits to the blockers: one pump
        spread = SpreadBlocker(AsyncClient(link, port), ports, fences=fences, rfence=rfence)
        mapper = Mapper(spread, owner)
        peer = MapperPeer(link, port, mapper, spread, cfg.peers.max_inflight)
        peer.fast, peer.gens = fast, (None if fast is None else
                                      GenPage(str(inst.run_dir / "mapgen"), writer=True))
        peer.rio = await make_rados_io(cfg, str(inst.run_dir), rfence, peer.rados_done)
        port.attach()
        log.info("mapper peer %s on port %d, blockers %s, %d stale locks broken", mapper.owner,
                 MAPPER_PORT, ports, n)
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Task[None]] = []

        def on_term() -> None:
            if not stopping and peer is not None:
                log.info("draining requests and closing volumes")
                stopping.append(loop.create_task(peer.shutdown()))

        loop.add_signal_handler(signal.SIGTERM, on_term)

        async def watch_registry() -> None:
            while link.registry_alive():
                await asyncio.sleep(0.5)
            log.warning("registry gone: stopping")
            on_term()

        tasks = [loop.create_task(peer.sweep()), loop.create_task(watch_registry()),
                 *upkeep_tasks.start(loop, cfg, args)]
        await peer.serve()
        for t in tasks:
            t.cancel()
        if stopping:
            await stopping[0]
    finally:
        if peer is not None:
            peer.close()
            if peer.spread.rfence is not None:
                await peer.spread.rfence.blk.close()
        link.close()
    log.info("mapper peer stopped (%d requests served)", peer.served if peer else 0)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Process entry point."""
    p = child_args("mapper-peer")
    p.add_argument("--blockers", type=int, required=True)
    return run_child("mapper-peer", p.parse_args(argv), serve)


if __name__ == "__main__":
    sys.exit(main())
