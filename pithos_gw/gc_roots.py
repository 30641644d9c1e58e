"""Garbage-collection roots of the gateway (entry point ``archipelago.gc_roots``: gateway).

Every block named by any recorded object version (current, history and deleted ones:
versions stay restorable until they are purged) is referenced. Read from the metadata
database ([database] url, or DATA_DIR/gateway.db) in one query; blocks of uploads still
in flight are younger than the GC grace period (docs/gc.md).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import sqlalchemy as sa

from archipelago.hashing import ZERO_HASH


def roots(instance: Any, config: Any) -> set[str] | Awaitable[set[str]]:
    """Hex names of the blocks every object version of the instance's gateway names (an
    awaitable of them: the collector runs in an event loop)."""
    from pithos_gw.meta import MetaStore
    from pithos_gw.meta_tables import versions
    from pithos_gw.server import has_meta, meta_url

    if instance is None or not has_meta(instance, config):
        return set()

    async def scan() -> set[str]:
        meta = MetaStore(meta_url(instance, config), pool_size=1)
        out: set[str] = set()
        try:
            async with meta.db.read() as conn:
                result = await conn.stream(sa.select(versions.c.hashes))
                async for (blob,) in result:
                    blob = bytes(blob)
                    out.update(blob[i : i + 32].hex() for i in range(0, len(blob), 32))
        finally:
            await meta.close()
        out.discard(ZERO_HASH)
        return out

    return scan()
