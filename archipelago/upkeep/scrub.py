"""Scrub: re-verify what the store holds (docs/gc.md#scrub).

- map headers and entry chunks: their xxh3-128 checksums (a damaged one is reported);
- every object a map names must exist (missing ones are reported with their maps);
- content blocks verify themselves: their name is the SHA-256 of their bytes (trailing
  zeros stripped). ``--all`` also re-hashes content blocks no map names (gateway
  objects' blocks).
With ``repair``, a corrupt or missing content block is restored from any other object
that holds the same content and verifies (a volume's writable block the content map was
hashed from, the same data uploaded again); a corrupt block with no good copy is
quarantined (copied to ``quarantine:NAME``, then removed), so readers get a clear
MissingBlock error instead of wrong data. Writable blocks carry no checksum yet: only
their presence is checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from archipelago.blocker.base import Blocker
from archipelago.errors import Corrupt, NotFound
from archipelago.mapper.chunks import BATCH, load_chunk
from archipelago.mapper.format import ENTRIES_PER_CHUNK, Header
from archipelago.upkeep.maps import entry_names, headers

HEX64 = re.compile(r"^[0-9a-f]{64}$")
QUARANTINE = "quarantine:"


@dataclass
class ScrubReport:
    """What a scrub checked and found."""

    maps: int = 0
    objects: int = 0  # content blocks re-hashed
    bytes: int = 0
    corrupt: list[dict[str, Any]] = field(default_factory=list)  # {object, volumes}
    missing: list[dict[str, Any]] = field(default_factory=list)  # {object, volumes}
    bad_maps: list[dict[str, str]] = field(default_factory=list)  # {map, error}
    repaired: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """True when nothing is wrong (or everything wrong was repaired)."""
        fixed = set(self.repaired)
        return not self.bad_maps and all(
            x["object"] in fixed for x in self.corrupt + self.missing)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**asdict(self), "clean": self.clean}


def content_ok(name: str, data: bytes) -> bool:
    """True if ``data`` is the content block ``name``."""
    return hashlib.sha256(data.rstrip(b"\0")).hexdigest() == name


async def _read_all(b: Blocker, name: str) -> bytes:
    return await b.read_existing(name, 0, await b.size(name))


async def _refs(b: Blocker, h: Header, rep: ScrubReport, refs: dict[str, set[str]]) -> None:
    n = h.nblocks
    for c in h.stored_chunks():
        if c * ENTRIES_PER_CHUNK >= n:
            continue
        try:
            buf = await load_chunk(b, h, c)
        except Corrupt as e:
            rep.bad_maps.append({"map": h.name, "error": e.message or str(e)})
            continue
        for name in entry_names(h, buf, 0, min(ENTRIES_PER_CHUNK, n - c * ENTRIES_PER_CHUNK)):
            refs.setdefault(name, set()).add(h.name)


async def _find_copy(b: Blocker, name: str, candidates: list[str]) -> bytes | None:
    """Bytes of another object with the content ``name`` (verified), if any."""
    for other in candidates:
        if other == name:
            continue
        try:
            data = await _read_all(b, other)
        except NotFound:
            continue
        if content_ok(name, data):
            return data.rstrip(b"\0")
    return None


async def scrub(b: Blocker, *, volumes: list[str] | None = None, repair: bool = False,
                budget: int | None = None, everything: bool = False,
                progress: Callable[[int, int], None] | None = None) -> ScrubReport:
    """Check maps ``volumes`` (None: all) and their objects; ``everything``: also every
    content block no map names. ``budget``: bytes per second re-hashed (None: no limit)."""
    t0 = time.monotonic()
    rep = ScrubReport()
    refs: dict[str, set[str]] = {}
    want = None if volumes is None else {f"map:{v}" for v in volumes}
    names = await b.list("map:") if want is None else sorted(want)
    try:
        async for h in headers(b, names):
            if h.deleted:
                continue
            rep.maps += 1
            await _refs(b, h, rep, refs)
    except Corrupt as e:
        rep.bad_maps.append({"map": "?", "error": e.message or str(e)})
    if want is not None and rep.maps < len(want):
        raise NotFound(f"no such volume among {sorted(v[4:] for v in want)}")
    todo = sorted(refs)
    if everything:
        todo = sorted(set(todo) | {n for n in await b.list() if HEX64.match(n)})
    bad: list[tuple[str, str]] = []  # (object, "corrupt" | "missing")

    async def one(name: str) -> None:
        try:
            if not HEX64.match(name):
                await b.size(name)  # writable block: presence only
                return
            data = await _read_all(b, name)
        except NotFound:
            bad.append((name, "missing"))
            return
        rep.objects += 1
        rep.bytes += len(data)
        if not content_ok(name, data):
            bad.append((name, "corrupt"))

    started = time.monotonic()
    for i in range(0, len(todo), BATCH):
        await asyncio.gather(*(one(n) for n in todo[i : i + BATCH]))
        if progress is not None:
            progress(min(i + BATCH, len(todo)), len(todo))
        if budget:  # the daemon's slow scrub: stay under its I/O budget
            ahead = rep.bytes / budget - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    for name, what in sorted(bad):
        (rep.corrupt if what == "corrupt" else rep.missing).append(
            {"object": name, "volumes": sorted(refs.get(name, ()))})
    if repair and bad:
        await _repair(b, rep, bad)
    rep.seconds = time.monotonic() - t0
    return rep


async def _repair(b: Blocker, rep: ScrubReport, bad: list[tuple[str, str]]) -> None:
    # Candidates: every object that is not itself a content block named by its hash
    # (writable blocks, quarantined copies): one of them may hold the same bytes.
    others = [n for n in await b.list() if not n.startswith("map") and not HEX64.match(n)]
    for name, what in bad:
        if not HEX64.match(name):
            continue  # a writable block has no second copy
        data = await _find_copy(b, name, others)
        if data is not None:
            await b.put(name, data, fua=True)
            rep.repaired.append(name)
        elif what == "corrupt":
            await b.copy(name, QUARANTINE + name, fua=True)
            await b.delete(name)
            rep.quarantined.append(name)
