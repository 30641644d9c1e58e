"""Gateway test helpers: a real gateway on 127.0.0.1 in a background thread (uvloop).

Blocking clients (python-swiftclient, requests) talk to it over real HTTP; ``call``
runs a coroutine on the server's loop (e.g. to count blocker objects).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from aiohttp import web

from archipelago.blocker.base import Blocker
from pithos_gw.app import make_app, make_runner
from pithos_gw.common import META, GatewayConfig

T = TypeVar("T")


class GatewayThread:
    """A gateway served by aiohttp on an ephemeral loopback port."""

    def __init__(self, make_blocker: Callable[[], Blocker], db_path: Path,
                 config: GatewayConfig | None = None) -> None:
        self._make_blocker = make_blocker
        self._db_path = db_path
        self._config = config
        self.loop = uvloop.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="gw-test")
        self.port = 0
        self.blocker: Blocker
        self.app: web.Application
        self._runner: web.AppRunner

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.blocker = self._make_blocker()
        self.app = make_app(self.blocker, self._db_path, self._config)
        self._runner = make_runner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> GatewayThread:
        """Start serving; returns self once the port is bound."""
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("gateway did not start")
        return self

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the gateway's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def add_user(self, account: str) -> str:
        """Create a user; returns its key (= token)."""
        return self.call(self.app[META].user_add(account))

    def count_blocks(self) -> int:
        """Objects in the blocker (content-addressed blocks here)."""
        return len(self.call(self.blocker.list()))

    def stop(self) -> None:
        """Shut the server down and close the blocker."""
        async def shutdown() -> None:
            await self._runner.cleanup()
            await self.blocker.close()

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def memory_blocker() -> Blocker:
    """A fresh MemoryBlocker."""
    from archipelago.blocker.memory import MemoryBlocker

    return MemoryBlocker()


def file_blocker(root: Path) -> Callable[[], Blocker]:
    """A factory of FileBlockers (no fsync: tests need no durability) over ``root``."""
    from archipelago.blocker.file import FileBlocker

    return lambda: FileBlocker(str(root), fsync=False)


@pytest.fixture(params=["memory", "file"])
def gw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayThread]:
    """A running gateway over a memory or a file blocker."""
    factory = memory_blocker if request.param == "memory" else file_blocker(tmp_path / "blocks")
    g = GatewayThread(factory, tmp_path / "meta.db").start()
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture
def gw_mem(tmp_path: Path) -> Iterator[GatewayThread]:
    """A running gateway over a memory blocker."""
    g = GatewayThread(memory_blocker, tmp_path / "meta.db").start()
    try:
        yield g
    finally:
        g.stop()
