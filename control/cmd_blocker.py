"""`archip blocker ls|lock-info|break-lock`: inspect the configured object store."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from archipelago.blocker import open_blocker
from archipelago.blocker.base import Blocker
from archipelago.errors import Busy, NotFound
from control.context import get_config, get_instance, print_json, wants_json


def _with_blocker(args: argparse.Namespace, fn: Callable[[Blocker], Awaitable[Any]]) -> Any:
    inst = get_instance(args).ensure()
    cfg = get_config(args, inst)

    async def go() -> Any:
        blocker = open_blocker(cfg)
        try:
            return await fn(blocker)
        finally:
            await blocker.close()

    return asyncio.run(go())


def _ls(args: argparse.Namespace) -> int:
    """List object names (with sizes) starting with a prefix."""
    async def run(b: Blocker) -> list[dict[str, Any]]:
        return [{"name": n, "size": await b.size(n)} for n in await b.list(args.prefix)]

    objects = _with_blocker(args, run)
    if wants_json(args):
        print_json(objects)
    else:
        for o in objects:
            print(f"{o['size']:>12}  {o['name']}")
    return 0


def _lock_info(args: argparse.Namespace) -> int:
    """Show who holds a lock and whether that holder is gone (stale)."""
    info = _with_blocker(args, lambda b: b.lock_info(args.name))
    if info is None:
        raise NotFound(f"lock {args.name!r} is not held")
    if wants_json(args):
        print_json(dataclasses.asdict(info))
    else:
        state = "STALE (holder process is gone)" if info.stale else "held"
        print(f"{args.name}: {state} by {info.owner}")
    return 0


def _break_lock(args: argparse.Namespace) -> int:
    """Break a lock; without --force only a stale one."""
    async def run(b: Blocker) -> str:
        info = await b.lock_info(args.name)
        if info is None:
            raise NotFound(f"lock {args.name!r} is not held")
        if not info.stale and not args.force:
            raise Busy(f"lock {args.name!r} is held by live owner {info.owner} (use --force)")
        await b.unlock(args.name, info.owner, force=True)
        if args.name.startswith("lock:"):  # a volume lock: fence its evicted holder
            from archipelago.mapper.removal import fence_out

            await fence_out(b, args.name[5:])
        return info.owner

    owner = _with_blocker(args, run)
    if wants_json(args):
        print_json({"name": args.name, "broken": True, "owner": owner})
    else:
        print(f"{args.name}: lock of {owner} broken")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `blocker`."""
    p = subparsers.add_parser("blocker", help="inspect the object store (objects, locks)")
    sub = p.add_subparsers(title="blocker commands", metavar="ACTION", required=True)
    ls = sub.add_parser("ls", help="list objects")
    ls.add_argument("prefix", nargs="?", default="")
    ls.set_defaults(func=_ls)
    info = sub.add_parser("lock-info", help="who holds a lock (stale if the holder is gone)")
    info.add_argument("name")
    info.set_defaults(func=_lock_info)
    brk = sub.add_parser("break-lock", help="break a stale lock (--force: any lock)")
    brk.add_argument("name")
    brk.add_argument("--force", action="store_true", help="also break a live owner's lock")
    brk.set_defaults(func=_break_lock)
