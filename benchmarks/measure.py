"""Shared helpers of the suite's drivers: the run config, CPU accounting, metric building."""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import Metric

GiB = 1 << 30
MiB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Cfg:
    """What one driver run is asked to do."""

    quick: bool
    repeat: int
    ceph_dir: str = ""
    ceph_conf: str = ""


# -- CPU accounting -------------------------------------------------------------------

def proc_cpu(pid: int) -> float:
    """utime+stime of one process in seconds (0 when it is gone)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and all its live descendants."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    keep, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in keep]
        keep.update(kids)
        frontier += kids
    return sum(proc_cpu(p) for p in keep)


def pidfile_cpu(path: Path) -> float:
    """CPU of the process tree whose root pid is in ``path`` (0 when absent)."""
    try:
        return tree_cpu(int(path.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return 0.0


def children_cpu() -> float:
    """CPU seconds of reaped children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    """CPU seconds of this process (all threads) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def log(msg: str) -> None:
    """Progress on stderr (the suite keeps it in the benchmark's log)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def new_metric(bench: str, name: str, unit: str, higher: bool, arch: list[str],
               peers: list[str], **kw: object) -> Metric:
    """A Metric with empty sample lists for every path."""
    m = Metric(bench, name, unit, higher, arch, peers, {}, **kw)  # type: ignore[arg-type]
    return m


def add(m: Metric, path: str, value: float, cpu: float | None = None) -> None:
    """Record one run of one path."""
    m.samples.setdefault(path, []).append(value)
    if cpu is not None:
        m.cpu.setdefault(path, []).append(cpu)
