"""Process bookkeeping shared by the throwaway servers (Ceph, PostgreSQL)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def pid_is_ours(pid: int, d: Path) -> bool:
    """A live (non-zombie) process that mentions our directory: recycled pids are safe."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return str(d) in cmdline and state != "Z"


def _exited(pid: int) -> bool:
    """Gone, or a zombie: a parent that exits under a PID 1 that does not reap (containers,
    CI sandboxes) stays a zombie forever, and os.kill(pid, 0) still succeeds on it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def watch(pid: int, running: Path, teardown: Callable[[], None]) -> None:
    """Watchdog: call ``teardown`` once ``pid`` exits, unless ``running`` (the server's
    run directory) is gone first (a normal `down`)."""
    while running.is_dir():
        if _exited(pid):
            teardown()
            return
        time.sleep(0.5)


def processes_of(d: Path) -> list[int]:
    """Live (non-zombie) processes other than this one whose command line names ``d``."""
    me = os.getpid()
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and int(p.name) != me and pid_is_ours(int(p.name), d)]
