"""The mapper peer's periodic upkeep: garbage collection and scrub in child processes
(``python -m archipelago.upkeep``), their reports kept for status and metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

log = logging.getLogger("archipelago.mapper-peer")

#: Last report of each kind ("gc", "scrub") and run counts, for status and metrics.
LAST: dict[str, Any] = {}


async def run_once(what: str, args: Any) -> dict[str, Any] | None:
    """One upkeep run in a child process; its JSON report (None if it failed)."""
    argv = [sys.executable, "-m", "archipelago.upkeep", what, "--data-dir", str(args.data_dir)]
    if args.config:
        argv += ["--config", str(args.config)]
    for o in args.overrides:
        argv += ["-o", o]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    LAST[f"{what}_runs"] = LAST.get(f"{what}_runs", 0) + 1
    if proc.returncode != 0:
        LAST[f"{what}_failures"] = LAST.get(f"{what}_failures", 0) + 1
        log.warning("%s failed: %s", what, err.decode(errors="replace").strip()[-300:])
        return None
    rep = json.loads(out)
    LAST[what] = rep
    log.info("%s: %s", what, rep)
    return rep


async def periodic(what: str, interval: float, args: Any) -> None:
    """Run ``what`` every ``interval`` seconds (first run after one interval)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await run_once(what, args)
        except (OSError, ValueError) as e:
            log.warning("%s could not run: %s", what, e)


def start(loop: asyncio.AbstractEventLoop, cfg: Any, args: Any) -> list[asyncio.Task[None]]:
    """The periodic tasks the configuration asks for."""
    tasks = []
    if cfg.gc.interval > 0:
        tasks.append(loop.create_task(periodic("gc", cfg.gc.interval, args)))
    if cfg.gc.scrub_interval > 0:
        tasks.append(loop.create_task(periodic("scrub", cfg.gc.scrub_interval, args)))
    return tasks
