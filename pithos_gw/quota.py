"""Charging stored bytes to a QuotaCharger around the two metadata writes that change an
account's usage (a new current version, a deletion).

Each change runs: issue(delta) -> metadata commit -> accept, or reject when the commit
fails. The delta is computed under a per-account lock held across issue, commit and
accept, so concurrent writers of one account never charge from the same stale size. A
crash between commit and accept leaves a pending charge: ``reconcile`` (at start) drops
pending charges and sets usage to the bytes really stored, so usage never drifts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from weakref import WeakValueDictionary

from pithos_gw.hooks import QuotaCharger
from pithos_gw.meta import MetaStore, ObjectVersion

log = logging.getLogger("pithos_gw.quota")
T = TypeVar("T")


class ChargedMetaStore(MetaStore):
    """A MetaStore whose usage-changing writes are charged to ``charger``."""

    def __init__(self, path: str | Path, charger: QuotaCharger) -> None:
        super().__init__(path)
        self.charger = charger
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    def _lock(self, account: str) -> asyncio.Lock:
        lock = self._locks.get(account)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[account] = lock
        return lock

    async def _current_bytes(self, account: str, container: str, name: str) -> int:
        v = await super().object_get(account, container, name)
        return v.bytes if v is not None else 0

    async def _charged(self, account: str, what: str, delta_of: Callable[[int], int],
                       container: str, name: str, write: Callable[[], Awaitable[T]]) -> T:
        lock = self._lock(account)
        async with lock:
            delta = delta_of(await self._current_bytes(account, container, name))
            if delta == 0:
                return await write()
            serial = await self.charger.issue(account, delta, f"{what} {container}/{name}")
            try:
                result = await write()
            except BaseException:
                await asyncio.shield(self.charger.reject(serial))
                raise
            # Committed: the accept must happen even if the request is cancelled now.
            await asyncio.shield(self.charger.accept(serial))
            return result

    async def object_put(self, account: str, container: str, name: str, *, size: int,
                         **kw: Any) -> ObjectVersion:
        """Record a new current version, charging ``size`` minus the replaced version's."""
        return await self._charged(
            account, "object update", lambda old: size - old, container, name,
            lambda: MetaStore.object_put(self, account, container, name, size=size, **kw))

    async def object_delete(self, account: str, container: str, name: str) -> None:
        """Delete the current version, freeing its bytes."""
        return await self._charged(
            account, "object delete", lambda old: -old, container, name,
            lambda: MetaStore.object_delete(self, account, container, name))

    async def reconcile(self) -> None:
        """Tell the charger the bytes every account really stores (at start)."""
        await self.charger.reconcile(await self.usage_by_account())
