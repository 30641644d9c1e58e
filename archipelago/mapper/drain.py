"""Drain: shared entry for a volume's I/O, exclusive entry that waits for in-flight I/O."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Drain:
    """Shared entry for I/O, exclusive entry that waits for in-flight I/O to finish."""

    def __init__(self) -> None:
        self._n = 0
        self._blocked = False
        self._cond = asyncio.Condition()
        self._excl = asyncio.Lock()

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
