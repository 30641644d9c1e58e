"""Helpers bridging librados completions to asyncio (used by the RADOS blocker)."""

from __future__ import annotations

import asyncio
import errno
import json
from typing import Any

#: Our own in-flight limits stay below librados' objecter throttles (raised by the
#: blocker's config), because a throttled aio_* call would block the event loop thread.
MAX_INFLIGHT_BYTES = 256 * 1024 * 1024
MAX_INFLIGHT_OPS = 512


def errno_of(exc: BaseException) -> int:
    """The positive errno carried by a rados or ctypes error (EIO if none)."""
    value = getattr(exc, "errno", None)
    return abs(value) if isinstance(value, int) else errno.EIO


class Budget:
    """Bounds in-flight operations and bytes without blocking the loop."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._bytes = 0
        self._ops = 0

    async def acquire(self, nbytes: int) -> None:
        """Wait until ``nbytes`` more fit in flight."""
        async with self._cond:
            # A single request larger than the budget still goes, alone.
            await self._cond.wait_for(
                lambda: self._ops < MAX_INFLIGHT_OPS
                and (self._bytes == 0 or self._bytes + nbytes <= MAX_INFLIGHT_BYTES)
            )
            self._bytes += nbytes
            self._ops += 1

    async def release(self, nbytes: int) -> None:
        """Return ``nbytes`` to the budget."""
        async with self._cond:
            self._bytes -= nbytes
            self._ops -= 1
            self._cond.notify_all()


def settle(fut: asyncio.Future[Any], result: Any) -> None:
    """Set a future's result unless it was cancelled meanwhile (runs in the loop)."""
    if not fut.done():
        fut.set_result(result)


def pool_is_full(cluster: Any, pool: str) -> bool:
    """True if the osdmap marks the cluster or ``pool`` full (blocking mon call)."""
    ret, out, _ = cluster.mon_command(json.dumps({"prefix": "osd dump", "format": "json"}),
                                      b"", timeout=5)
    if ret != 0:
        return False
    dump = json.loads(out)
    if "full" in dump.get("flags", "").split(","):
        return True
    return any("full" in p.get("flags_names", "").split(",")
               for p in dump.get("pools", []) if p.get("pool_name") == pool)
