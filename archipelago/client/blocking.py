"""The blocking client: waits in C with the GIL released; thread-safe (a port per thread).

A thin shell over client/core.py: it runs the plans, one request at a time per thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from archipelago.client import core
from archipelago.client.connect import DEFAULT_TIMEOUT, instance_of, link_to
from archipelago.instance import Instance
from archipelago.peers.client import BlockingClient as _BlockingPeerClient
from archipelago.peers.ops import Op
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Reply
from archipelago.peers.retry import retry_blocking
from archipelago.wire import MAPPER_PORT, VolumeInfo


def drive(plan: core.Plan[Any], issue: Callable[[core.Call], Reply],
          reopen: Callable[[int], None] | None = None) -> Any:
    """Run ``plan`` to its result: each Call through ``issue``, sub-plans in turn."""
    # The one loop written twice on purpose: aio.drive is its twin with/without await
    # (a blocking caller has no event loop to share it); what it runs is written once.
    try:
        step = next(plan)
        while True:
            try:
                if isinstance(step, core.Call):
                    out: Any = issue(step)
                elif isinstance(step, core.Each):
                    out = [drive(p, issue, reopen) for p in step.plans]
                else:
                    assert reopen is not None, "only a volume handle reopens"
                    out = reopen(step.generation)
            except Exception as e:  # noqa: BLE001 - the plan decides: handled or re-raised
                step = plan.throw(e)
                continue
            step = plan.send(out)
    except StopIteration as stop:
        return stop.value


class Client(core.ClientCore):
    """Blocking client (thread-safe: each thread submits on its own port)."""

    def __init__(self, inst: Instance, link: PeerLink, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(inst, link, timeout)
        self.peer = _BlockingPeerClient(link)

    @classmethod
    def connect(cls, instance: Instance | str | os.PathLike[str] | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> Client:
        """Connect to the daemon of an instance (a data dir, or the default instance)."""
        inst = instance_of(instance)
        return cls(inst, link_to(inst), timeout)

    def issue(self, c: core.Call) -> Reply:
        """Send one request and wait for its reply (re-sent while its peer restarts)."""
        port = MAPPER_PORT if c.port is None else c.port

        def send() -> Reply:
            return self.peer.call(port, c.op, c.target, c.offset, c.size, c.payload, c.flags,
                                  arg=c.arg, timeout=self.timeout)

        return retry_blocking(send, c.retry_for) if c.retry_for else send()

    def run(self, plan: core.Plan[Any]) -> Any:
        """Run a plan of client/core.py; its result."""
        return drive(plan, self.issue)

    def call(self, op: Op, target: str = "", offset: int = 0, size: int = 0,
             payload: bytes | memoryview | None = None, flags: int = 0) -> Reply:
        """One raw request to the mapper peer (release the Reply)."""
        return self.issue(core.Call(op, target, offset, size, payload, flags))

    def ctrl(self, op: str, **kw: Any) -> Any:
        """One volume op; returns its decoded result."""
        return self.run(core.plan_ctrl(op, **kw))

    def ping(self) -> None:
        """Round-trip to the mapper peer."""
        self.peer.ping(MAPPER_PORT, timeout=self.timeout)

    def open(self, name: str, force: bool = False) -> VolumeHandle:
        """Open a volume (writable ones take the daemon's lock on it)."""
        d = self.run(self.plan_open(name, force))
        return VolumeHandle(self, int(d["handle"]), VolumeInfo.from_dict(d["info"]), force)

    def close(self) -> None:
        """Release this client's ports and the link."""
        self.peer.close()
        self.link.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VolumeHandle(core.HandleCore):
    """An open volume (blocking); large requests go piece by piece."""

    def __init__(self, client: Client, handle: int, info: VolumeInfo, force: bool = False,
                 reopen_for: float = 30.0) -> None:
        super().__init__(client, handle, info, force, reopen_for)
        self._reopening = threading.Lock()

    def _reopen(self, generation: int) -> None:
        with self._reopening:  # threads that failed together reopen once
            if self.reopened == generation:
                self.run(self.plan_reopen())

    def run(self, plan: core.Plan[Any]) -> Any:
        """Run a plan of client/core.py; its result."""
        return drive(plan, self.client.issue, self._reopen)

    def __enter__(self) -> VolumeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _method(plan: Callable[..., core.Plan[Any]]) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kw: Any) -> Any:
        return self.run(plan(self, *args, **kw))

    return method


core.bind(Client, core.CLIENT_METHODS, _method)
core.bind(VolumeHandle, core.HANDLE_METHODS, _method)
