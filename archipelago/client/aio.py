"""The asyncio client: requests on the caller's loop; large I/O split and issued concurrently.

A thin shell over client/core.py: it runs the plans, the pieces of one request at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from archipelago.client import core
from archipelago.client.connect import DEFAULT_TIMEOUT, instance_of, link_to
from archipelago.instance import Instance
from archipelago.peers.client import AsyncClient as _AsyncPeerClient
from archipelago.peers.ops import Op
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Reply
from archipelago.peers.retry import retry_async
from archipelago.wire import MAPPER_PORT, VolumeInfo


async def drive(plan: core.Plan[Any], issue: Callable[[core.Call], Awaitable[Reply]],
                reopen: Callable[[int], Awaitable[None]] | None = None) -> Any:
    """Run ``plan`` to its result: each Call through ``issue``, sub-plans concurrently."""
    # The one loop written twice on purpose: blocking.drive is its twin with/without await
    # (a blocking caller has no event loop to share it); what it runs is written once.
    try:
        step = next(plan)
        while True:
            try:
                if isinstance(step, core.Call):
                    out: Any = await issue(step)
                elif isinstance(step, core.Each):
                    out = await asyncio.gather(*(drive(p, issue, reopen) for p in step.plans))
                else:
                    assert reopen is not None, "only a volume handle reopens"
                    out = await reopen(step.generation)
            except Exception as e:  # noqa: BLE001 - the plan decides: handled or re-raised
                step = plan.throw(e)
                continue
            step = plan.send(out)
    except StopIteration as stop:
        return stop.value


class AsyncClient(core.ClientCore):
    """Asyncio client (create with ``await AsyncClient.connect(...)`` inside a loop)."""

    # client/blocking.py's Client is this shell without the awaits (same lines, another
    # colour of function): everything both do is written once in core.ClientCore.

    def __init__(self, inst: Instance, link: PeerLink, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(inst, link, timeout)
        self.peer = _AsyncPeerClient(link)

    @classmethod
    async def connect(cls, instance: Instance | str | os.PathLike[str] | None = None,
                      timeout: float = DEFAULT_TIMEOUT) -> AsyncClient:
        """Connect to the daemon of an instance."""
        inst = instance_of(instance)
        link = await asyncio.to_thread(link_to, inst)
        return cls(inst, link, timeout)

    async def issue(self, c: core.Call) -> Reply:
        """Send one request and await its reply (re-sent while its peer restarts)."""
        port = MAPPER_PORT if c.port is None else c.port

        def send() -> Awaitable[Reply]:
            return self.peer.call(port, c.op, c.target, c.offset, c.size, c.payload, c.flags,
                                  arg=c.arg, timeout=self.timeout)

        return await (retry_async(send, c.retry_for) if c.retry_for else send())

    async def run(self, plan: core.Plan[Any]) -> Any:
        """Run a plan of client/core.py; its result."""
        return await drive(plan, self.issue)

    async def call(self, op: Op, target: str = "", offset: int = 0, size: int = 0,
                   payload: bytes | memoryview | None = None, flags: int = 0) -> Reply:
        """One raw request to the mapper peer (release the Reply)."""
        return await self.issue(core.Call(op, target, offset, size, payload, flags))

    async def ctrl(self, op: str, **kw: Any) -> Any:
        """One volume op; returns its decoded result."""
        return await self.run(core.plan_ctrl(op, **kw))

    async def ping(self) -> None:
        """Round-trip to the mapper peer."""
        await self.peer.ping(MAPPER_PORT, timeout=self.timeout)

    async def open(self, name: str, force: bool = False) -> AsyncVolumeHandle:
        """Open a volume (writable ones take the daemon's lock on it)."""
        d = await self.run(self.plan_open(name, force))
        return AsyncVolumeHandle(self, int(d["handle"]), VolumeInfo.from_dict(d["info"]), force)

    def close(self) -> None:
        """Release the port and the link."""
        self.peer.close()
        self.link.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class AsyncVolumeHandle(core.HandleCore):
    """An open volume (asyncio); pieces of large requests are issued concurrently."""

    def __init__(self, client: AsyncClient, handle: int, info: VolumeInfo, force: bool = False,
                 reopen_for: float = 30.0) -> None:
        super().__init__(client, handle, info, force, reopen_for)
        self._reopening = asyncio.Lock()

    async def _reopen(self, generation: int) -> None:
        async with self._reopening:  # concurrent pieces reopen once
            if self.reopened == generation:
                await self.run(self.plan_reopen())

    async def run(self, plan: core.Plan[Any]) -> Any:
        """Run a plan of client/core.py; its result."""
        return await drive(plan, self.client.issue, self._reopen)

    async def __aenter__(self) -> AsyncVolumeHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _method(plan: Callable[..., core.Plan[Any]]) -> Callable[..., Any]:
    async def method(self: Any, *args: Any, **kw: Any) -> Any:
        return await self.run(plan(self, *args, **kw))

    return method


core.bind(AsyncClient, core.CLIENT_METHODS, _method)
core.bind(AsyncVolumeHandle, core.HANDLE_METHODS, _method)
