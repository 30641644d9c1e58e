"""Shared by the volume and import/export commands: sizes, tables, the client connection."""

from __future__ import annotations

import argparse
import re
import time
from fractions import Fraction

from archipelago.client import Client
from archipelago.errors import InvalidArgument
from archipelago.wire import VolumeInfo
from control.context import get_instance

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(text: str) -> int:
    """Parse ``4096``, ``64K``, ``10G``, ``1.5GiB`` into bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*", str(text).upper())
    if not m:
        raise InvalidArgument(f"bad size {text!r} (examples: 4096, 64K, 10G)")
    # Fraction, not float: exact for any digits, so 9007199254740993 stays itself.
    n = Fraction(m.group(1)) * _UNITS[m.group(2)]
    if n.denominator != 1:
        raise InvalidArgument(f"size {text!r} is not a whole number of bytes")
    if n >= 1 << 63:
        raise InvalidArgument(f"size {text!r} is too large")
    return int(n)


def human(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def connect(args: argparse.Namespace) -> Client:
    """A blocking client of the selected instance's daemon (NotRunning says how to start it)."""
    return Client.connect(get_instance(args))


def info_table(infos: list[VolumeInfo]) -> str:
    """Human table of volumes."""
    rows = [("NAME", "SIZE", "KIND", "RO", "PARENT", "LOCK", "CREATED")]
    for i in infos:
        lock = (i.lock_owner or "-") + (" (stale)" if i.lock_stale else "")
        rows.append((i.name, human(i.size), i.kind, "yes" if i.readonly else "no",
                     i.parent or "-", lock,
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(i.created))))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def info_text(i: VolumeInfo) -> str:
    """Human description of one volume."""
    lines = [f"name:       {i.name}", f"size:       {human(i.size)} ({i.size} bytes)",
             f"block size: {human(i.block_size)}", f"kind:       {i.kind}",
             f"read-only:  {'yes' if i.readonly else 'no'}", f"parent:     {i.parent or '-'}",
             f"epoch:      {i.epoch}",
             f"created:    {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(i.created))}",
             f"lock:       {i.lock_owner or '-'}{' (stale: holder is dead)' if i.lock_stale else ''}"]
    return "\n".join(lines)
