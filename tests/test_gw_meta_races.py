"""Races of the gateway's metadata writes, on SQLite and (when the session has one)
PostgreSQL: deletes decided on one version commit only while it is still current (a
conditional DELETE, the expirer), and a charge that keeps losing to other writers ends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_helpers import fresh_database, pg_url_or_skip

from archipelago.errors import Busy
from pithos_gw import expiry
from pithos_gw.common import META
from pithos_gw.meta import MetaStore
from pithos_gw.quota import CHARGE_ATTEMPTS, ChargedMetaStore

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh metadata database of each engine."""
    if request.param == "sqlite":
        yield str(tmp_path / "gateway.db")
    else:
        with fresh_database(pg_url_or_skip()) as u:
            yield u


def _put(meta: MetaStore, size: int, **extra: Any) -> Any:
    return meta.object_put("acc", "c", "x", size=size, hashes=[], hash=f"h{size}",
                           checksum="", content_type="text/plain", meta=extra,
                           modified_by="acc")


class Charger:
    """Counts charges the way the identity plugin settles them (unit-test fake)."""

    def __init__(self) -> None:
        self.usage: dict[str, int] = {}
        self.pending: dict[int, tuple[str, int]] = {}

    async def issue(self, account: str, delta: int, name: str) -> int:
        self.pending[len(self.pending) + 1] = (account, delta)
        return len(self.pending)

    async def accept(self, serial: int) -> None:
        account, delta = self.pending.pop(serial)
        self.usage[account] = self.usage.get(account, 0) + delta

    async def reject(self, serial: int) -> None:
        self.pending.pop(serial)

    async def reconcile(self, usage: dict[str, int]) -> None:
        self.usage = dict(usage)


def test_delete_of_a_replaced_version_deletes_nothing(url: str) -> None:
    async def go() -> None:
        charger = Charger()
        meta = ChargedMetaStore(url, charger)
        await meta.open()
        try:
            await meta.container_put("acc", "c", {}, {})
            old = await _put(meta, 10)
            new = await _put(meta, 25)  # written after a DELETE checked `old`
            assert not await meta.object_delete("acc", "c", "x", expect=old.serial)
            cur = await meta.object_get("acc", "c", "x")
            assert cur is not None and cur.serial == new.serial
            assert charger.usage == {"acc": 25} and not charger.pending  # charge rejected
            assert await meta.object_delete("acc", "c", "x", expect=new.serial)
            assert await meta.object_get("acc", "c", "x") is None
            assert charger.usage == {"acc": 0}
        finally:
            await meta.close()

    asyncio.run(go())


class ReplacedAfterListing(MetaStore):
    """A store in which a client writes the path between the expirer's listing and its
    delete: the race the expirer must lose."""

    async def expired_objects(self, when: float) -> list[tuple[str, str, str, int]]:
        found = await super().expired_objects(when)
        for _ in found:
            await _put(self, 7)  # no expiry: must survive the sweep
        return found


def test_expirer_never_deletes_a_version_written_after_its_listing(url: str) -> None:
    async def go() -> None:
        meta = ReplacedAfterListing(url)
        await meta.open()
        try:
            await meta.container_put("acc", "c", {}, {})
            await _put(meta, 3, **{"X-Delete-At": "1"})  # expired long ago
            assert await expiry.sweep({META: meta}) == 0  # type: ignore[arg-type]
            cur = await meta.object_get("acc", "c", "x")
            assert cur is not None and cur.bytes == 7
            # and with nothing racing it, an expired version does go
            await MetaStore.object_put(meta, "acc", "c", "y", size=1, hashes=[], hash="h",
                                       checksum="", content_type="text/plain",
                                       meta={"X-Delete-At": "1"}, modified_by="acc")
            assert await expiry.sweep({META: meta}) == 1  # type: ignore[arg-type]
            assert await meta.object_get("acc", "c", "y") is None
        finally:
            await meta.close()

    asyncio.run(go())


class AlwaysReplaced(ChargedMetaStore):
    """Another host replaces the path between every size read and commit."""

    reads = 0

    async def _current_bytes(self, account: str, container: str, name: str) -> int:
        self.reads += 1
        return 10**9 + self.reads  # never the size the commit finds


def test_a_charge_losing_every_race_ends_busy_with_nothing_pending(url: str) -> None:
    async def go() -> None:
        charger = Charger()
        meta = AlwaysReplaced(url, charger)
        await meta.open()
        try:
            await meta.container_put("acc", "c", {}, {})
            with pytest.raises(Busy, match="other writers keep replacing it"):
                await _put(meta, 5)
            assert meta.reads == CHARGE_ATTEMPTS
            assert not charger.pending and not charger.usage  # every charge rejected
            assert await meta.object_get("acc", "c", "x") is None
        finally:
            await meta.close()

    asyncio.run(go())
