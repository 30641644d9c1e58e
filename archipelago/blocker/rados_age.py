"""Object ages on RADOS (for garbage collection's grace period): mtime from a stat."""

from __future__ import annotations

import errno
import time
from typing import Any

from archipelago.blocker.base import check_name
from archipelago.errors import NotFound


class RadosAgeMixin:
    """``mtime`` of RadosBlocker. ``touch`` stays the contract's default (an existence
    check): RADOS has no cheap way to refresh an mtime without creating an absent
    object, so deduplicated blocks rely on the grace period alone there (docs/gc.md)."""

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
