"""The mapper peer's background services: the Prometheus endpoint ([metrics] listen; its
URL in DATA_DIR/run/metrics.json for `archip daemon status`) and periodic garbage
collection and scrub in child processes (``python -m archipelago.upkeep``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

from archipelago import metrics
from archipelago.instance import Instance

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
        (metrics.GC_RUNS if what == "gc" else metrics.SCRUB_RUNS).labels("failed").inc()
        log.warning("%s failed: %s", what, err.decode(errors="replace").strip()[-300:])
        return None
    rep = json.loads(out)
    LAST[what] = rep
    log.info("%s: %s", what, rep)
    if what == "gc":
        metrics.GC_RUNS.labels("ok").inc()
        metrics.GC_DELETED.inc(rep["deleted"])
        metrics.GC_BYTES.inc(rep["bytes"])
        metrics.GC_OBJECTS.set(rep["objects"])
    else:
        metrics.SCRUB_RUNS.labels("clean" if rep["clean"] else "problems").inc()
        metrics.SCRUB_BYTES.inc(rep["bytes"])
        for kind in ("corrupt", "missing"):
            metrics.SCRUB_PROBLEMS.labels(kind).inc(len(rep[kind]))
    return rep


async def periodic(what: str, interval: float, args: Any) -> None:
    """Run ``what`` every ``interval`` seconds (first run after one interval)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await run_once(what, args)
        except (OSError, ValueError) as e:
            log.warning("%s could not run: %s", what, e)


def serve_metrics(cfg: Any, args: Any) -> str | None:
    """Start the Prometheus endpoint; its URL (None: off or the address is taken)."""
    state = Instance.from_args(args.data_dir).run_dir / "metrics.json"
    try:
        state.unlink(missing_ok=True)
        started = metrics.serve(cfg.metrics.listen)
    except Exception as e:  # noqa: BLE001 -- metrics must never take the mapper down
        log.warning("metrics endpoint on %r not started: %s", cfg.metrics.listen, e)
        return None
    if started is None:
        return None
    url = started[1]
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.chmod(tmp, 0o600)
    os.replace(tmp, state)
    log.info("metrics on %s", url)
    return url


def start(loop: asyncio.AbstractEventLoop, cfg: Any, args: Any) -> list[asyncio.Task[None]]:
    """The endpoint and the periodic tasks the configuration asks for."""
    serve_metrics(cfg, args)
    tasks = []
    if cfg.gc.interval > 0:
        tasks.append(loop.create_task(periodic("gc", cfg.gc.interval, args)))
    if cfg.gc.scrub_interval > 0:
        tasks.append(loop.create_task(periodic("scrub", cfg.gc.scrub_interval, args)))
    return tasks
