"""Start-up helpers of the mapper peer: wait for the blocker peers, break dead owners' locks."""

from __future__ import annotations

import asyncio
import logging
import time

from archipelago.errors import ArchipelagoError, NotRunning
from archipelago.mapper import Mapper
from archipelago.peers.client import AsyncClient

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
