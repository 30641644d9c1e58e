"""`archip selftest`: exercise the configured blocker in the instance (write, read, hash, lock)."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from archipelago.blocker import open_blocker
from archipelago.blocker.base import Blocker, make_owner
from archipelago.config import Config
from archipelago.errors import Corrupt
from archipelago.hashing import block_hash
from control.context import get_config, get_instance, print_json, wants_json


async def blocker_selftest(cfg: Config) -> list[dict[str, Any]]:
    """Run each blocker operation once on throwaway objects; Corrupt on a wrong result."""
    blocker: Blocker = open_blocker(cfg)
    steps: list[dict[str, Any]] = []
    tag = f"selftest-{os.getpid()}-{os.urandom(4).hex()}"
    obj, dup, lock = f"{tag}-obj", f"{tag}-copy", f"{tag}-lock"
    payload = os.urandom(64 * 1024)  # random: its content object cannot be a real block

    async def step(name: str, coro: Any, check: Any = None) -> Any:
        t0 = time.perf_counter()
        result = await coro
        ok = True if check is None else check(result)
        steps.append({"step": name, "ok": bool(ok), "ms": round((time.perf_counter() - t0) * 1e3, 3)})
        if not ok:
            raise Corrupt(f"selftest step {name!r} returned a wrong result")
        return result

    content = None
    try:
        await step("write", blocker.write(obj, 4096, payload, fua=True))
        await step("read", blocker.read(obj, 0, 4096 + len(payload) + 100),
                   lambda d: d == bytes(4096) + payload + bytes(100))
        await step("size", blocker.size(obj), lambda n: n == 4096 + len(payload))
        await step("copy", blocker.copy(obj, dup))
        await step("list", blocker.list(tag), lambda names: names == sorted([obj, dup]))
        expected = block_hash(bytes(4096) + payload)
        content = await step("hash", blocker.hash(obj), lambda h: h == expected)
        await step("read-content", blocker.read(content, 4096, len(payload)),
                   lambda d: d == payload)
        owner = make_owner("selftest")
        await step("lock", blocker.lock(lock, owner))
        await step("lock-info", blocker.lock_info(lock),
                   lambda info: info is not None and info.owner == owner and not info.stale)
        await step("unlock", blocker.unlock(lock, owner))
        await step("flush", blocker.flush())
        await step("delete", blocker.delete(obj))
        await step("delete-copy", blocker.delete(dup))
        await step("gone", blocker.exists(obj), lambda e: e is False)
    finally:
        for name in (obj, dup, content):
            if name:
                try:
                    await blocker.delete(name)
                except Exception:  # noqa: BLE001 -- best-effort cleanup of what remains
                    pass
        await blocker.close()
    return steps


def _run(args: argparse.Namespace) -> int:
    """Self-check the configured blocker and print one line per step."""
    inst = get_instance(args).ensure()
    cfg = get_config(args, inst)
    steps = asyncio.run(blocker_selftest(cfg))
    where = cfg.blocker.file.path if cfg.blocker.backend == "file" else cfg.blocker.backend
    if wants_json(args):
        print_json({"backend": cfg.blocker.backend, "location": where, "steps": steps,
                    "ok": all(s["ok"] for s in steps)})
    else:
        print(f"blocker selftest: backend={cfg.blocker.backend} at {where}")
        for s in steps:
            print(f"  {s['step']:<13} {'ok' if s['ok'] else 'FAILED'}  {s['ms']:8.3f} ms")
        print("blocker selftest: all ok")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `selftest`."""
    p = subparsers.add_parser("selftest", help="check the configured blocker in this instance")
    p.set_defaults(func=_run)
