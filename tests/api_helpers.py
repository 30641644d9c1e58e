"""An API server (gateway + control-plane plugins, control.host.apiserver.build) on
127.0.0.1 in a background thread, for tests with real HTTP clients.

    with ApiServer(tmp_path, plugins=["identity"]) as api:
        requests.get(api.url + "/identity/v2.0/...")
        api.call(api.host.plugin("identity").service.some_coroutine())

``plugin_classes`` hosts plugins that are not installed as entry points (tests' own);
``overrides`` are config overrides ("section.key=value") as on the command line.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvloop
from aiohttp import web

from archipelago.blocker.base import Blocker
from archipelago.config import load as load_config
from archipelago.instance import Instance
from control.host.apiserver import build
from control.host.host import Host
from control.host.plugin import Plugin

T = TypeVar("T")


class ApiServer:
    """The one API server over a file blocker in ``data_dir/blocks``, on an ephemeral port."""

    def __init__(self, data_dir: Path, plugins: list[str] | None = None,
                 overrides: list[str] | None = None,
                 plugin_classes: list[type[Plugin]] | None = None,
                 configure: Any = None) -> None:
        self.instance = Instance(Path(data_dir)).ensure()
        sets = list(overrides or []) + ["blocker.file.fsync=false"]
        if plugins is not None:
            sets.append("control.plugins=[" + ",".join(f'"{p}"' for p in plugins) + "]")
        self.config = load_config(self.instance.data_dir, overrides=sets, env={})
        if configure is not None:
            configure(self.config)  # e.g. add a test plugin's section
        self._classes = plugin_classes
        self.loop = uvloop.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="api-test")
        self.port = 0
        self.host: Host
        self.app: web.Application
        self.blocker: Blocker
        self._runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as e:  # noqa: BLE001 -- reported by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        from archipelago.blocker.file import FileBlocker

        self.blocker = FileBlocker(str(self.instance.blocks_dir), fsync=False)
        self.host = Host(self.instance, self.config, plugin_classes=self._classes)
        self.app = build(self.instance, self.config, self.blocker, host=self.host)
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> ApiServer:
        """Start serving; returns self once the port is bound (raises the start error)."""
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("API server did not start")
        if self._error is not None:
            self._thread.join(10)
            raise self._error
        return self

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        """Shut the server down (plugins stopped, database closed) and close the blocker."""
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            await self.blocker.close()

        if self._thread.is_alive():
            self.call(shutdown())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
