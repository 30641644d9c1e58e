"""What the supervisor and its peer processes share: blocker ports, segment sizing, logging,
the child command line and run loop."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from archipelago.config import Config, PeersConfig
from archipelago.errors import ArchipelagoError
from archipelago.instance import Instance
from archipelago.peers.segment import MiB, SegmentConfig

#: Blocker peer i (0-based) binds BLOCKER_BASE + i (the mapper peer: wire.MAPPER_PORT).
BLOCKER_BASE = 1
NR_STATIC = 16
MAX_BLOCKERS = NR_STATIC - BLOCKER_BASE
LOG_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"


def blocker_ports(n: int) -> list[int]:
    """Static ports of ``n`` blocker peers."""
    return [BLOCKER_BASE + i for i in range(n)]


def segment_config(peers: PeersConfig) -> SegmentConfig:
    """Arena classes sized from [peers] segment_size and request_slots."""
    small = ((4096, 1024), (64 * 1024, 256), (MiB, 32))
    rest = peers.segment_size - sum(s * c for s, c in small)
    big = max(16, rest // (4 * MiB))
    return SegmentConfig(nr_ports=128, nr_static=NR_STATIC,
                         nr_desc=max(256, peers.request_slots),
                         classes=(*small, (4 * MiB, big)))


def setup_logging(log_file: Path | None, to_stderr: bool, level: int = logging.INFO) -> None:
    """Log to the instance's log file, and to stderr in the foreground."""
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter(LOG_FORMAT)
    if log_file is not None:
        log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    if to_stderr or log_file is None:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)


def child_args(name: str) -> argparse.ArgumentParser:
    """The common arguments of a child process (instance selection + logging)."""
    p = argparse.ArgumentParser(prog=f"archipelago-{name}")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--config", default=None)
    p.add_argument("-o", "--set", dest="overrides", action="append", default=[])
    p.add_argument("--foreground", action="store_true", help="also log to stderr")
    return p


def load(args: argparse.Namespace) -> tuple[Instance, Config]:
    """Instance and effective config from child arguments."""
    inst = Instance.from_args(args.data_dir)
    return inst, inst.config(args.config, args.overrides)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to signal us when the supervisor dies (Linux prctl PR_SET_PDEATHSIG),
    and ignore the terminal's Ctrl-C: the supervisor stops its children in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Run ``coro`` on uvloop (plain asyncio if uvloop is missing)."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def run_child(name: str, args: argparse.Namespace,
              serve: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> int:
    """Start a peer process: die with the supervisor, log to the instance, run ``serve``."""
    die_with_parent()
    inst, _ = load(args)
    setup_logging(inst.log_file, args.foreground)
    try:
        return run_loop(serve(args))
    except ArchipelagoError as e:
        logging.getLogger(f"archipelago.{name}").error("%s failed: %s", name, e.message)
        return e.exit_code
