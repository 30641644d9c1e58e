"""A Blocker spread over the N blocker peers by a hash of the object name, with re-issue.

Every blocker peer serves the same store (one directory or one RADOS pool), so the
placement only spreads load. A request that fails with PeerDied (the peer was killed;
the registry failed it back) is re-issued once the supervisor has restarted the peer:
every blocker operation is idempotent when repeated with the same arguments, except
that a repeated delete may find the object gone, which is then success.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from archipelago.blocker.base import Blocker, LockInfo, check_name
from archipelago.blocker.fence import FenceFiles, fenced_message
from archipelago.errors import ArchipelagoError, Fenced, InvalidArgument, NotFound, PeerDied
from archipelago.metrics import REISSUES
from archipelago.peers.client import AsyncClient
from archipelago.peers.ops import Flag, Op
from archipelago.peers.request import Request
from archipelago.service.forward import borrowable, call_shared
from archipelago.service.remote_blocker import FENCE, RemoteBlocker
from archipelago.wire import block_placement

if TYPE_CHECKING:
    from archipelago.blocker.rados_fence import RadosFence

log = logging.getLogger("archipelago.mapper-peer")
T = TypeVar("T")
#: RADOS: what a fenced request re-checks before it is re-issued to a restarted peer
#: (a new client instance, registered as a writer only by this check).
_REISSUE_CHECK: contextvars.ContextVar[Callable[[RemoteBlocker], Awaitable[None]] | None] = (
    contextvars.ContextVar("reissue_check", default=None))


class SpreadBlocker(Blocker):
    """RemoteBlockers on ``ports``; ``retry_for`` seconds of re-issue after PeerDied."""

    kind = "spread"

    def __init__(self, client: AsyncClient, ports: list[int], retry_for: float = 30.0,
                 fences: FenceFiles | None = None, rfence: RadosFence | None = None) -> None:
        self.remotes = [RemoteBlocker(client, p) for p in ports]
        self.retry_for = retry_for
        self.inflight = [0] * len(ports)
        self.reissued = 0
        # File backend: the fence files of the shared directory (docs/fencing.md).
        self.fences = fences
        # RADOS backend: the fence object and blocklist (rados_fence.py).
        self.rfence = rfence

    async def fence_bump(self, key: str) -> int:
        """Grant a new writer generation of map ``key`` (file backend: in a thread)."""
        if self.rfence is not None:
            return await self.rfence.bump(key)
        if self.fences is None:
            return await super().fence_bump(key)
        return await asyncio.to_thread(self.fences.bump, check_name(key))

    async def fence_check(self, key: str, gen: int) -> None:
        """Fenced unless ``gen`` is current."""
        if self.rfence is not None:
            if await self.rfence.current(key) != gen:
                raise Fenced(fenced_message(key))
            return None
        if self.fences is None:
            return await super().fence_check(key, gen)
        if self.fences.current(check_name(key)) != gen:
            raise Fenced(fenced_message(key))

    async def fenced_op(self, key: str, gen: int, op: str, *args: object) -> None:
        """The op, sent to a blocker peer that checks the fence itself (file) or after this
        client is registered at ``gen`` (RADOS: the blocklist fences older writers)."""
        if op not in ("write", "put", "copy", "delete"):
            raise InvalidArgument(f"not a fenced operation: {op!r}")
        if self.rfence is not None:
            # Every blocker peer's client is registered at ``gen`` before the request
            # goes out (and again before a re-issue to a restarted peer).
            rf = self.rfence
            await rf.ensure(key, gen)
            token = _REISSUE_CHECK.set(lambda r: self._recheck(r, key, gen))
            try:
                return await getattr(self, op)(*args)
            finally:
                _REISSUE_CHECK.reset(token)
        if self.fences is None:
            return await super().fenced_op(key, gen, op, *args)
        # File backend: the request carries the fence and the blocker peer checks it under
        # the fence's lock around its own syscall, so a write queued there when this
        # process dies cannot land after a takeover's bump.
        token = FENCE.set((check_name(key), gen))
        try:
            await getattr(self, op)(*args)
        finally:
            FENCE.reset(token)

    async def _recheck(self, remote: RemoteBlocker, key: str, gen: int) -> None:
        """Before re-issuing a fenced request: once the restarted peer answers (it
        published its new client address before serving), register afresh at ``gen``."""
        assert self.rfence is not None
        with contextlib.suppress(ArchipelagoError):  # still down: the re-issue fails again
            await remote.client.ping(remote.dst, timeout=1.0)
        await self.rfence.ensure(key, gen, fresh=True)

    async def fence_forget(self, key: str) -> None:
        """Close the cached fence descriptor of a volume closed here."""
        if self.rfence is not None:
            await self.rfence.forget(key)
        if self.fences is not None:
            self.fences.forget(check_name(key))

    async def fence_drop(self, key: str) -> None:
        """Forget the fence of a removed map."""
        if self.rfence is not None:
            await self.rfence.drop(key)
        if self.fences is not None:
            self.fences.drop(check_name(key))

    def _index(self, name: str) -> int:
        return block_placement(name, len(self.remotes))

    async def _do(self, name: str, fn: Callable[[RemoteBlocker], Awaitable[T]],
                  idempotent_notfound: bool = False) -> T:
        i = self._index(name)
        deadline = time.monotonic() + self.retry_for
        retried = False
        while True:
            self.inflight[i] += 1
            try:
                return await fn(self.remotes[i])
            except PeerDied:
                if time.monotonic() > deadline:
                    raise
                if not retried:
                    log.warning("blocker peer on port %d died: re-issuing requests",
                                self.remotes[i].dst)
                retried = True
                self.reissued += 1
                REISSUES.inc()
                await asyncio.sleep(0.05)
                if (check := _REISSUE_CHECK.get()) is not None:
                    await check(self.remotes[i])
            except NotFound:
                if retried and idempotent_notfound:
                    return None  # type: ignore[return-value]
                raise
            finally:
                self.inflight[i] -= 1

    async def read(self, name: str, offset: int, size: int) -> bytes:
        """Read from the peer owning ``name``."""
        return await self._do(name, lambda r: r.read(name, offset, size))

    async def read_existing(self, name: str, offset: int, size: int) -> bytes:
        """Read from the peer owning ``name``; NotFound if the object is absent."""
        return await self._do(name, lambda r: r.read_existing(name, offset, size))

    async def write(self, name: str, offset: int, data: bytes | memoryview,
                    fua: bool = False) -> None:
        """Write through the peer owning ``name`` (borrowing the client's buffer if it can)."""
        req = borrowable(data)
        if req is not None and len(data) <= self.remotes[0].step:
            flags = Flag.FUA if fua else 0
            (await self._do(name, lambda r: call_shared(
                r, Op.WRITE, name, offset, len(data), flags, req))).release()
            return
        await self._do(name, lambda r: r.write(name, offset, data, fua))

    async def put(self, name: str, data: bytes | memoryview, fua: bool = True) -> None:
        """Atomic put through the peer owning ``name`` (borrowing like :meth:`write`)."""
        req = borrowable(data)
        if req is not None and len(data) <= self.remotes[0].step:
            flags, n = (Flag.FUA if fua else 0), len(data)
            (await self._do(name, lambda r: call_shared(
                r, Op.CREATE, name, 0, n, flags, req, arg=n))).release()
            return
        await self._do(name, lambda r: r.put(name, data, fua))

    async def read_shared(self, name: str, offset: int, size: int, req: Request,
                          flags: int = 0) -> Any:
        """Read into ``req``'s buffer (forward.read_forward); returns the Reply to release."""
        return await self._do(name, lambda r: call_shared(r, Op.READ, name, offset, size, flags,
                                                           req))

    async def copy(self, src: str, dst: str, fua: bool = False) -> None:
        """Server-side copy (any peer can do it: the store is shared)."""
        await self._do(dst, lambda r: r.copy(src, dst, fua))

    async def delete(self, name: str) -> None:
        """Delete; NotFound if absent (a re-issued delete finding it gone succeeds)."""
        await self._do(name, lambda r: r.delete(name), idempotent_notfound=True)

    async def size(self, name: str) -> int:
        """Object size."""
        return await self._do(name, lambda r: r.size(name))

    async def touch(self, name: str) -> bool:
        """True if the object exists, made young again (a dedup hit: see gc.py)."""
        return await self._do(name, lambda r: r.touch(name))

    async def list(self, prefix: str = "") -> list[str]:
        """Sorted names with ``prefix``."""
        return await self._do(prefix, lambda r: r.list(prefix))

    async def flush(self) -> None:
        """Flush every peer (each keeps its own set of files written since its last flush)."""
        async def one(i: int) -> None:
            deadline = time.monotonic() + self.retry_for
            while True:
                try:
                    return await self.remotes[i].flush()
                except PeerDied:
                    # Writes the dead peer completed sit in the page cache, which survives
                    # the process; only a host crash before the next flush could lose them.
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(one(i) for i in range(len(self.remotes))))

    async def hash(self, name: str) -> str:
        """Content-address ``name``."""
        return await self._do(name, lambda r: r.hash(name))

    async def lock(self, name: str, owner: str, wait: bool = False,
                   timeout: float | None = None) -> None:
        """Exclusive lock (re-taking our own lock after a re-issue succeeds)."""
        await self._do(name, lambda r: r.lock(name, owner, wait, timeout))

    async def unlock(self, name: str, owner: str, force: bool = False) -> None:
        """Release a lock."""
        await self._do(name, lambda r: r.unlock(name, owner, force))

    async def lock_info(self, name: str) -> LockInfo | None:
        """Lock holder or None."""
        return await self._do(name, lambda r: r.lock_info(name))

    def stats(self) -> list[dict[str, Any]]:
        """Per-peer requests in flight."""
        return [{"port": r.dst, "inflight": n} for r, n in zip(self.remotes, self.inflight,
                                                                 strict=True)]
