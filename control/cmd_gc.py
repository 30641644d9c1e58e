"""`archip gc` and `archip scrub`: upkeep of the configured object store (docs/gc.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from archipelago.blocker import open_blocker
from archipelago.upkeep.gc import GcReport, collect, parse_duration
from control.context import get_config, get_instance, print_json, wants_json


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _gc(args: argparse.Namespace) -> int:
    """Mark every referenced object, delete the rest that is older than the grace period."""
    inst = get_instance(args).ensure()
    cfg = get_config(args, inst)
    grace = cfg.gc.grace if args.grace is None else parse_duration(args.grace)

    def progress(phase: str, done: int, total: int) -> None:
        if args.progress:
            print(f"{phase} {done}/{total}", file=sys.stderr, flush=True)

    async def go() -> GcReport:
        b = open_blocker(cfg)
        try:
            return await collect(b, grace=grace, dry_run=args.dry_run, instance=inst,
                                 config=cfg, progress=progress)
        finally:
            await b.close()

    rep = asyncio.run(go())
    if wants_json(args):
        print_json(rep.to_dict())
    else:
        verb = "would delete" if rep.dry_run else "deleted"
        print(f"{verb} {rep.garbage if rep.dry_run else rep.deleted} objects "
              f"({_human(rep.bytes)}) of {rep.objects}; {rep.referenced} referenced by "
              f"{rep.maps} maps and roots; {rep.young} younger than {rep.grace:g}s kept "
              f"({rep.seconds:.1f}s)")
    return 0


def _scrub(args: argparse.Namespace) -> int:
    """Re-verify maps and blocks; exit 9 (corrupt) when anything is wrong and unrepaired."""
    from archipelago.errors import Corrupt, InvalidArgument
    from archipelago.upkeep.scrub import ScrubReport, scrub

    if bool(args.volume) == bool(args.all):
        raise InvalidArgument("scrub needs --volume NAME or --all")
    inst = get_instance(args).ensure()
    cfg = get_config(args, inst)

    async def go() -> ScrubReport:
        b = open_blocker(cfg)
        try:
            return await scrub(b, volumes=[args.volume] if args.volume else None,
                               repair=args.repair, everything=args.all)
        finally:
            await b.close()

    rep = asyncio.run(go())
    if wants_json(args):
        print_json(rep.to_dict())
    else:
        print(f"checked {rep.maps} maps, re-hashed {rep.objects} blocks ({_human(rep.bytes)})")
        for x in rep.bad_maps:
            print(f"damaged map {x['map']}: {x['error']}")
        for kind, items in (("corrupt", rep.corrupt), ("missing", rep.missing)):
            for x in items:
                print(f"{kind} {x['object']} (volumes: {', '.join(x['volumes']) or '-'})")
        for n in rep.repaired:
            print(f"repaired {n} from another copy")
        for n in rep.quarantined:
            print(f"quarantined {n} (no good copy; readers now get an error)")
    return 0 if rep.clean else Corrupt.exit_code


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `gc` and `scrub`."""
    s = subparsers.add_parser("scrub", help="re-verify maps and blocks (content hashes)")
    s.add_argument("--volume", default=None, help="only this volume's map and blocks")
    s.add_argument("--all", action="store_true", help="every map and every content block")
    s.add_argument("--repair", action="store_true",
                   help="restore bad blocks from another verified copy, else quarantine them")
    s.set_defaults(func=_scrub)
    p = subparsers.add_parser("gc", help="delete objects no map or gateway object references")
    p.add_argument("--grace", default=None, metavar="DURATION",
                   help="keep unreferenced objects younger than this (e.g. 0, 30m, 2h; "
                        "default [gc] grace)")
    p.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    p.add_argument("--progress", action="store_true", help="print sweep progress on stderr")
    p.set_defaults(func=_gc)
