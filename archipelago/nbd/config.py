"""Parsing the plugin's KEY=VALUE config values (kept out of plugin.py to keep it thin)."""

from __future__ import annotations

import re

from archipelago.errors import InvalidArgument

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Parse ``4096``, ``64K``, ``1G``, ``1GiB`` into bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise InvalidArgument(f"bad size {text!r} (examples: 4096, 64K, 1G)")
    return int(m.group(1)) * _UNITS[m.group(2)]
