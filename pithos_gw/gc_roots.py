"""Garbage-collection roots of the gateway (entry point ``archipelago.gc_roots``: gateway).

Every block named by any recorded object version (current, history and deleted ones:
versions stay restorable until they are purged) is referenced. Read straight from the
metadata file, read-only, in one query; blocks of uploads still in flight are younger
than the GC grace period (docs/gc.md).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from archipelago.hashing import ZERO_HASH


def roots(instance: Any, config: Any) -> set[str]:
    """Hex names of the blocks every object version of the instance's gateway names."""
    from pithos_gw.server import db_path

    if instance is None:
        return set()
    path = db_path(instance)
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        out: set[str] = set()
        for (blob,) in db.execute("SELECT hashes FROM versions"):
            out.update(blob[i : i + 32].hex() for i in range(0, len(blob), 32))
    finally:
        db.close()
    out.discard(ZERO_HASH)
    return out
