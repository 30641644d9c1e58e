"""The blocker contract through the segment: RemoteBlocker -> BlockerPeer -> memory/file.

The contract tests of tests/test_blocker_contract.py are imported and re-run here with
``make_blocker`` overridden: each made blocker is a fresh BlockerPeer on its own static
port (over the one store of the test) and a RemoteBlocker talking to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from peers_helpers import Daemon, make_daemon
from test_blocker_contract import *  # noqa: F403 - re-run the contract over the segment

from archipelago.blocker.base import Blocker
from archipelago.peers.client import AsyncClient
from archipelago.peers.registry import PeerLink
from archipelago.peers.segment import SegmentConfig
from archipelago.service.remote_blocker import BlockerPeer, RemoteBlocker

CONFIG = SegmentConfig(nr_ports=24, nr_static=16, nr_desc=256,
                       classes=((4096, 128), (64 * 1024, 32), (4 * 1024 * 1024, 24)))


@pytest.fixture(params=["memory", "file"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def peers_daemon() -> Iterator[Daemon]:
    d = make_daemon(CONFIG)
    try:
        yield d
    finally:
        d.close()


def _factory(backend: str, tmp_path: Path) -> Callable[..., Blocker]:
    if backend == "memory":
        from archipelago.blocker.memory import MemoryBlocker, MemoryStore

        store = MemoryStore()
        return lambda **kw: MemoryBlocker(store=store, **kw)
    from archipelago.blocker.file import FileBlocker

    return lambda **kw: FileBlocker(str(tmp_path / "store"), **kw)


@pytest.fixture
async def make_blocker(backend: str, tmp_path: Path,
                       peers_daemon: Daemon) -> AsyncIterator[Callable[..., Blocker]]:
    link = PeerLink(peers_daemon.socket_path)
    client = AsyncClient(link)
    factory = _factory(backend, tmp_path)
    served: list[tuple[BlockerPeer, asyncio.Task[None]]] = []

    def make(**kw: Any) -> Blocker:
        local = factory(**kw)
        peer = BlockerPeer(link, len(served), local)
        served.append((peer, asyncio.get_running_loop().create_task(peer.serve())))
        return RemoteBlocker(client, peer.port.no)

    yield make
    for peer, task in served:
        peer.stop()
        await task
        await peer.blocker.close()
        peer.close()
    client.close()
    link.close()
    assert peers_daemon.segment.is_full(), "descriptors or buffers leaked"
