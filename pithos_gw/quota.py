"""Charging stored bytes to a QuotaCharger around the two metadata writes that change an
account's usage (a new current version, a deletion).

Each change runs: issue(delta) -> metadata commit -> accept, or reject when the commit
fails. The delta is computed under a per-path lock held across issue, commit and
accept, so concurrent writers of one object in this process never charge from the same
stale size (writers of different objects do not interact: a delta is one path's, and the
charger checks the limit atomically); the commit re-checks the size it was computed
from (``expect_bytes``, under the name's database lock), so a writer on another host
sharing the database cannot either: the charge is rejected and computed again. A crash
between commit and accept leaves a pending charge: ``reconcile`` (at start) drops pending
charges and sets usage to the bytes really stored, so usage never drifts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from weakref import WeakValueDictionary

from archipelago.errors import Busy
from pithos_gw.hooks import QuotaCharger
from pithos_gw.meta import MetaStore, ObjectVersion
from pithos_gw.meta_objects import ANY, BytesChanged

log = logging.getLogger("pithos_gw.quota")
T = TypeVar("T")
#: How often a charge is computed again after another host changed the path under it.
CHARGE_ATTEMPTS = 20
#: What a write answers when its precondition held it back: its charge is rejected.
_UNWRITTEN = object()


class ChargedMetaStore(MetaStore):
    """A MetaStore whose usage-changing writes are charged to ``charger``."""

    def __init__(self, path: str | Path, charger: QuotaCharger, pool_size: int = 5) -> None:
        super().__init__(path, pool_size)
        self.charger = charger
        self._locks: WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = (
            WeakValueDictionary())

    def _lock(self, path: tuple[str, str, str]) -> asyncio.Lock:
        lock = self._locks.get(path)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[path] = lock
        return lock

    async def _current_bytes(self, account: str, container: str, name: str) -> int:
        v = await super().object_get(account, container, name)
        return v.bytes if v is not None else 0

    async def _charged(self, account: str, what: str, delta_of: Callable[[int], int],
                       container: str, name: str,
                       write: Callable[[int], Awaitable[T]]) -> T:
        lock = self._lock((account, container, name))
        for _ in range(CHARGE_ATTEMPTS):
            async with lock:
                old = await self._current_bytes(account, container, name)
                delta = delta_of(old)
                serial = None
                if delta != 0:
                    serial = await self.charger.issue(account, delta, f"{what} {container}/{name}")
                try:
                    result = await write(old)
                except BytesChanged:
                    # Another host wrote the path meanwhile: charge again from its size.
                    if serial is not None:
                        await asyncio.shield(self.charger.reject(serial))
                    continue
                except BaseException:
                    if serial is not None:
                        await asyncio.shield(self.charger.reject(serial))
                    raise
                if serial is not None:
                    # Committed (None: a precondition held nothing back, nothing written):
                    # settled even if the request is cancelled now.
                    settle = self.charger.reject if result is _UNWRITTEN else self.charger.accept
                    await asyncio.shield(settle(serial))
                return None if result is _UNWRITTEN else result  # type: ignore[return-value]
        raise Busy(f"{container}/{name} changed under {CHARGE_ATTEMPTS} attempts to charge "
                   f"its {what}: other writers keep replacing it; try again")

    async def object_put(self, account: str, container: str, name: str, *, size: int,
                         **kw: Any) -> ObjectVersion | None:
        """Record a new current version, charging ``size`` minus the replaced version's."""
        async def write(old: int) -> Any:
            v = await MetaStore.object_put(self, account, container, name, size=size,
                                           expect_bytes=old, **kw)
            return _UNWRITTEN if v is None else v

        return await self._charged(account, "object update", lambda old: size - old,
                                   container, name, write)

    async def object_delete(self, account: str, container: str, name: str, *,
                            expect: int = ANY) -> bool:
        """Delete the current version, freeing its bytes (see MetaStore.object_delete)."""
        async def write(old: int) -> Any:
            done = await MetaStore.object_delete(self, account, container, name,
                                                 expect=expect, expect_bytes=old)
            return True if done else _UNWRITTEN

        return bool(await self._charged(account, "object delete", lambda old: -old,
                                        container, name, write))

    async def reconcile(self) -> None:
        """Tell the charger the bytes every account really stores (at start)."""
        await self.charger.reconcile(await self.usage_by_account())
