"""Object ages on RADOS (for garbage collection's grace period): mtime from a stat."""

from __future__ import annotations

import errno
import time
from typing import Any

from archipelago.blocker.base import check_name
from archipelago.blocker.rados_aio import touch_write
from archipelago.errors import NotFound


class RadosAgeMixin:
    """``mtime`` and ``touch`` of RadosBlocker (object ages for GC's grace period)."""

    _aio: Any
    _map: Any

    async def mtime(self, name: str) -> float:
        """When the object was last written (Unix time); NotFound if absent."""
        check_name(name)
        rv, args = await self._aio(
            f"stat {name}", 0, lambda io, cb: io.aio_stat(name, oncomplete=cb))
        if rv == -errno.ENOENT:
            raise NotFound(f"object {name!r} not found")
        if rv < 0:
            raise self._map(-rv, f"stat {name}")
        return time.mktime(args[1])  # python-rados gives time.localtime(mtime)

    async def touch(self, name: str) -> bool:
        """True if the object exists, and then stamp its mtime with now: a block reused by
        deduplication is young again, so GC spares it (docs/gc.md)."""
        check_name(name)
        rv, _ = await self._aio(f"touch {name}", 0, lambda io, cb: touch_write(io, cb, name))
        if rv == -errno.ENOENT:
            return False
        if rv == -errno.EOPNOTSUPP:  # no omap (an erasure-coded pool): existence only
            return await self.exists(name)  # type: ignore[attr-defined,no-any-return]
        if rv < 0:
            raise self._map(-rv, f"touch {name}")
        return True
