"""Drain: shared entry for a volume's I/O, exclusive entry that waits for in-flight I/O."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_NOTIFIES: set[asyncio.Task[None]] = set()


class Drain:
    """Shared entry for I/O, exclusive entry that waits for in-flight I/O to finish."""

    def __init__(self) -> None:
        self._n = 0
        self._blocked = False
        self._cond = asyncio.Condition()
        self._excl = asyncio.Lock()

    @property
    def draining(self) -> bool:
        """True while an exclusive operation waits for or holds the volume."""
        return self._blocked

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Run one I/O (waits while an exclusive operation runs)."""
        async with self._cond:
            await self._cond.wait_for(lambda: not self._blocked)
            self._n += 1
        try:
            yield
        finally:
            async with self._cond:
                self._n -= 1
                self._cond.notify_all()

    def try_enter(self) -> bool:
        """Enter shared without waiting (for I/O completing outside a task, e.g. an aio
        write); False while an exclusive operation waits or runs. Pair with :meth:`leave`."""
        if self._blocked:
            return False
        self._n += 1
        return True

    def leave(self) -> None:
        """End a :meth:`try_enter` (in the loop thread); wakes a waiting exclusive entry."""
        self._n -= 1
        if self._n == 0 and self._blocked:
            task = asyncio.get_running_loop().create_task(self._notify())
            _NOTIFIES.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(_NOTIFIES.discard)

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Block new I/O and wait until in-flight I/O is done."""
        async with self._excl:
            async with self._cond:
                self._blocked = True
                await self._cond.wait_for(lambda: self._n == 0)
            try:
                yield
            finally:
                async with self._cond:
                    self._blocked = False
                    self._cond.notify_all()
