"""``python -m archipelago.upkeep gc|scrub --data-dir DIR [--config F] [-o k=v]``: one run,
the JSON report on stdout. The daemon's mapper peer runs it periodically ([gc] interval,
[gc] scrub_interval) in a child process, so marking never stalls the I/O loop."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from archipelago.blocker import open_blocker
from archipelago.errors import ArchipelagoError
from archipelago.instance import Instance


async def _run(args: argparse.Namespace) -> dict:
    inst = Instance.from_args(args.data_dir)
    cfg = inst.config(args.config, args.overrides)
    b = open_blocker(cfg)
    try:
        if args.what == "gc":
            from archipelago.upkeep.gc import collect

            return (await collect(b, grace=cfg.gc.grace, instance=inst, config=cfg)).to_dict()
        from archipelago.upkeep.scrub import scrub

        return (await scrub(b, budget=cfg.gc.scrub_bytes_per_second)).to_dict()
    finally:
        await b.close()


def main(argv: list[str] | None = None) -> int:
    """Run one collection or scrub; exit 0 with its report, else the error's exit code."""
    p = argparse.ArgumentParser(prog="python -m archipelago.upkeep")
    p.add_argument("what", choices=("gc", "scrub"))
    p.add_argument("--data-dir", required=True)
    p.add_argument("--config", default=None)
    p.add_argument("-o", "--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    try:
        print(json.dumps(asyncio.run(_run(args))))
    except ArchipelagoError as e:
        print(f"archipelago.upkeep: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
