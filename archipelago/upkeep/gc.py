"""Garbage collection: mark every object a map or a root plugin references, sweep the rest.

Mark: every live map (volumes, snapshots, clones, hashed and Pithos maps: their chunks
and the blocks their entries name) plus the roots of plugins registered in the
entry-point group ``archipelago.gc_roots`` (the gateway's object versions, see
pithos_gw/gc_roots.py). Sweep: of the objects listed *before* marking began, delete the
unreferenced ones older than the grace period. Headers (``map:*``) are never deleted:
tombstones keep epochs increasing.

Why this is safe against concurrent work (docs/gc.md):
- an object created after the listing is not a candidate at all;
- new maps (snapshot, clone, rename) are found by listing headers again until a pass
  finds no live map whose uid was not marked yet, so a map that appeared (or moved)
  while marking ran is marked too;
- entries only ever start naming an *existing* unreferenced object through
  deduplication (import, hashmap PUT, hash, clone of a hashmap), and every dedup hit
  touches the object (Blocker.touch): the sweep checks each candidate's age in the
  same step as its delete (Blocker.delete_if_old), so a reused block is spared;
- ages count from the start of the run: an object is deleted only if it was written
  (or touched) more than the grace period before the collection began, so a block
  written by an operation in flight (its map entry not yet visible to the marking) is
  spared; uploads register nothing: their blocks stay young until the map or object
  version naming them is recorded. The grace period must exceed the longest single
  operation, import or upload (default 1 hour).
A crash (kill -9) mid-sweep only leaves garbage for the next run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from typing import Any

from archipelago.blocker.base import Blocker
from archipelago.errors import ArchipelagoError, Corrupt, NotFound
from archipelago.mapper.chunks import BATCH
from archipelago.mapper.format import Header
from archipelago.mapper.header_io import load_header
from archipelago.upkeep.maps import Marked, headers, mark_one

log = logging.getLogger("archipelago.gc")
ROOTS_GROUP = "archipelago.gc_roots"
#: Objects younger than this are never collected (seconds; [gc] grace).
DEFAULT_GRACE = 3600.0


@dataclass
class GcReport:
    """What one collection found and did."""

    objects: int = 0  # listed before marking
    referenced: int = 0
    maps: int = 0
    garbage: int = 0  # unreferenced and older than the grace period
    young: int = 0  # unreferenced but younger (spared)
    deleted: int = 0
    bytes: int = 0  # reclaimed (or, in a dry run, reclaimable)
    chunks_read: int = 0
    chunks_shared: int = 0
    grace: float = DEFAULT_GRACE
    dry_run: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


RootsFn = Callable[[Any, Any], Any]


def plugin_roots() -> list[RootsFn]:
    """The root providers registered in ``archipelago.gc_roots`` (each: (instance, config)
    -> referenced object names, or an awaitable of them)."""
    return [ep.load() for ep in entry_points(group=ROOTS_GROUP)]


async def _call_roots(fn: RootsFn, instance: Any, config: Any) -> Iterable[str]:
    out = fn(instance, config)
    if inspect.isawaitable(out):
        out = await out
    return out


async def mark(b: Blocker, roots: Iterable[RootsFn] = (), instance: Any = None,
               config: Any = None) -> Marked:
    """Every referenced object: all live maps (until no new one appears) and plugin roots."""
    marked = Marked(refs=set())
    uids: set[str] = set()
    while True:
        new = 0
        async for h in headers(b):
            marked.refs.add(f"map:{h.name}")
            if h.deleted or h.uid in uids:
                continue
            uids.add(h.uid)
            try:
                await mark_one(b, h, marked)
            except Corrupt:
                # A map removed while we read it loses its chunks: then it is gone, not
                # damaged. Anything else is real damage: abort (never sweep on it).
                if not await _gone(b, h):
                    raise
            new += 1
        if new == 0:
            break  # a full pass found no live map left to mark
    marked.maps = len(uids)
    for fn in roots:
        # A failing root provider aborts the collection: never sweep on partial roots.
        marked.refs.update(await _call_roots(fn, instance, config))
    return marked


async def _gone(b: Blocker, h: Header) -> bool:
    now = await load_header(b, h.name)
    return now is None or now.deleted or now.uid != h.uid


async def collect(b: Blocker, *, grace: float = DEFAULT_GRACE, dry_run: bool = False,
                  roots: Iterable[RootsFn] | None = None, instance: Any = None,
                  config: Any = None, clock: Callable[[], float] = time.time,
                  progress: Callable[[str, int, int], None] | None = None) -> GcReport:
    """Mark and sweep ``b`` (see module doc); ``roots`` default: the plugins' providers."""
    t0 = time.monotonic()
    rep = GcReport(grace=grace, dry_run=dry_run)
    # Ages count from the start of the run, not from the sweep: an object written just
    # before the listing may be named by a map update the marking did not see yet.
    cutoff = clock() - grace
    # Headers are never collected (tombstones keep epochs); quarantined blocks are
    # evidence for the operator (scrub.py).
    listed = [n for n in await b.list("") if not n.startswith(("map:", "quarantine:"))]
    rep.objects = len(listed)
    marked = await mark(b, plugin_roots() if roots is None else roots, instance, config)
    rep.referenced, rep.maps = len(marked.refs), marked.maps
    rep.chunks_read, rep.chunks_shared = marked.chunks_read, marked.chunks_shared
    candidates = [n for n in listed if n not in marked.refs]
    done = 0

    async def one(name: str) -> None:
        nonlocal done
        try:
            size = await b.size(name)
            # The age is checked in the same step as the delete (where the backend can):
            # a dedup hit touches the object and must not land in between.
            if dry_run:
                old = await b.mtime(name) < cutoff
            else:
                old = await b.delete_if_old(name, cutoff)
            if not old:
                rep.young += 1
                return
            rep.garbage += 1
            rep.deleted += not dry_run
            rep.bytes += size
        except NotFound:
            pass  # gone meanwhile (its map removed it)
        finally:
            done += 1

    for i in range(0, len(candidates), BATCH):
        await asyncio.gather(*(one(n) for n in candidates[i : i + BATCH]))
        if progress is not None:
            progress("sweep", done, len(candidates))
    rep.seconds = time.monotonic() - t0
    log.info("gc: %d objects, %d referenced, %d deleted (%d bytes), %d young spared%s",
             rep.objects, rep.referenced, rep.deleted, rep.bytes, rep.young,
             " (dry run)" if dry_run else "")
    return rep


def parse_duration(text: str) -> float:
    """Seconds of ``30``, ``30s``, ``15m``, ``2h``, ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = str(text).strip().lower()
    try:
        if t and t[-1] in units:
            v = float(t[:-1]) * units[t[-1]]
        else:
            v = float(t)
    except ValueError:
        v = -1.0
    if not v >= 0 or v == float("inf"):
        from archipelago.errors import InvalidArgument

        raise InvalidArgument(f"invalid duration {text!r} (e.g. 0, 90s, 15m, 2h, 1d)")
    return v


__all__ = ["ArchipelagoError", "GcReport", "collect", "mark", "parse_duration", "plugin_roots"]
