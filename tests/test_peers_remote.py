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


async def test_fenced_mutations_are_checked_by_the_peer(
        make_blocker: Callable[..., Blocker], backend: str, tmp_path: Path) -> None:
    """A mutation sent under FENCE carries its writer generation to the blocker peer, which
    checks it itself around the syscall: after a bump, an old writer's requests still
    queued or sent (its process may be dead) are refused, whole, with Fenced."""
    from archipelago.errors import Fenced, NotFound
    from archipelago.service.remote_blocker import FENCE

    if backend == "memory":
        pytest.skip("a memory store is one process's: no writer of it can outlive another")
    r = make_blocker()
    holder = _factory(backend, tmp_path)()  # the same store in this process: a new holder
    big = b"B" * (5 * 1024 * 1024)  # above the arena's largest buffer: two requests
    try:
        gen = await holder.fence_bump("map1")
        token = FENCE.set(("map1", gen))
        try:
            await r.write("aa" * 32, 0, b"one")
            await r.put("bb" * 32, b"two")
        finally:
            FENCE.reset(token)
        await holder.fence_bump("map1")  # a takeover
        token = FENCE.set(("map1", gen))
        try:
            for late in (lambda: r.write("aa" * 32, 0, b"late"), lambda: r.put("bb" * 32, b"late"),
                         lambda: r.copy("aa" * 32, "cc" * 32), lambda: r.delete("aa" * 32),
                         lambda: r.write("dd" * 32, 0, big)):
                with pytest.raises(Fenced):
                    await late()
        finally:
            FENCE.reset(token)
        assert await r.read("aa" * 32, 0, 3) == b"one"
        assert await r.read("bb" * 32, 0, 3) == b"two"
        for absent in ("cc" * 32, "dd" * 32):
            with pytest.raises(NotFound):
                await r.size(absent)
        await r.write("dd" * 32, 0, big)  # unfenced requests are not affected
    finally:
        await holder.close()
