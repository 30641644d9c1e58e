"""Byte layouts shared with the C filter (native/archip_layout.h, checked by a test).

- The generation page (``DATA_DIR/run/mapgen``): a ``MAPGEN_HEADER``-byte header (token
  u64, then reserved) followed by ``MAPGEN_SLOTS`` little-endian u64 counters; writers'
  exclusion locks are one byte per slot, at the slot's index.
- A fence file (``BLOCKS/fences/<map uid>``): the writer generation (u64 LE) at offset 0;
  writers lock one byte at ``FENCE_LOCK_BASE + thread id`` (docs/fencing.md).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

from archipelago.blocker.fence import LOCK_BASE as FENCE_LOCK_BASE

MAPGEN_HEADER = 64
MAPGEN_SLOTS = 4096
MAPGEN_SIZE = MAPGEN_HEADER + 8 * MAPGEN_SLOTS
#: The C header that must agree with the constants above.
C_HEADER = Path(__file__).resolve().parents[2] / "native" / "archip_layout.h"
#: C name -> value the header must define.
C_NAMES = {"ARCHIP_MAPGEN_HEADER": MAPGEN_HEADER, "ARCHIP_MAPGEN_SLOTS": MAPGEN_SLOTS,
           "ARCHIP_FENCE_LOCK_BASE": FENCE_LOCK_BASE}


def slot_of(name: str) -> int:
    """The generation slot of volume ``name`` (a collision only costs a needless refill)."""
    return zlib.crc32(name.encode()) % MAPGEN_SLOTS


def c_defines(text: str) -> dict[str, int]:
    """The numeric ``#define``s of a C header."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^#define\s+(ARCHIP_\w+)\s+(\d+)u?\s*$", text, re.M)}


def c_header_mismatches() -> list[str]:
    """Where native/archip_layout.h disagrees with this module (empty: it agrees)."""
    got = c_defines(C_HEADER.read_text())
    return [f"{k}: C {got.get(k)} != Python {v}" for k, v in C_NAMES.items() if got.get(k) != v]
