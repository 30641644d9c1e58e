"""Full-stack RADOS benchmark: the archipelago daemon on rados vs librbd, same cluster.

Archipelago side: a daemon (`archip daemon start --backend rados`, 2 blocker peers,
no nbdkit) in a scratch data dir, driven through the asyncio client library: client
-> shared-memory segment -> mapper peer -> blocker peers -> RADOS. librbd side:
python3-rbd aio on an RBD image of the same size (4 MiB objects, layering only, rbd
cache off), in the same pool (benchmarks.rados._rbd_run). Sequential 4 MiB writes then
reads over SIZE (queue depth 16), random 4 KiB writes then reads for SECONDS each
(queue depth 32); then clone time: archipelago `snapshot` + `clone` of the written
volume vs `rbd snap create` + `snap protect` + `clone` of the written image (the
median of a few repetitions). A third column runs the RadosBlocker alone (no daemon)
as a reference for what the stack costs. Ratios are archipelago/librbd: throughput
ratios (higher is better for archipelago) and a time ratio for clones (lower is
better). The last line is machine-readable:

    rados_stack: ratio_4m_write=<x> ratio_4m_read=<y> clone_ratio=<z>

Usage: .venv/bin/python -m benchmarks.rados_stack [--ceph-conf PATH] [--size 256]
[--seconds 3] [--rounds 3] [--ab]. Without --ceph-conf it starts (and always stops) a
memstore cluster of its own. The sides alternate for ROUNDS rounds (about 25 s a round
on 2 cores); each number is the median [min-max] over rounds and each ratio the median
of the per-round ratios: numbers are CPU-bound and noisy on busy machines. ``--ab``
adds the stack with the mapper peer's direct RADOS I/O off (ARCHIPELAGO_RADOS_NO_FAST=1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.rados import (
    BLOCK,
    POOL,
    QD_BIG,
    QD_SMALL,
    SMALL,
    MiB,
    _blocker_run,
    _rbd_run,
)
from testbed.ceph import purge, throwaway_cluster

ROOT = Path(__file__).resolve().parent.parent
CLONES = 5


def _archip(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run([sys.executable, "-m", "control", "--data-dir", str(data_dir), *args],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
                       env=None if env is None else {**os.environ, **env})
    if p.returncode != 0:
        raise SystemExit(f"archip {' '.join(args)} failed: {p.stderr.strip()}")
    return p.stdout


async def _workers(qd: int, job: object, jobs: int | None = None,
                   until: float | None = None) -> int:
    """Run ``job(i)`` from ``qd`` workers, for ``jobs`` indices or until a deadline."""
    count = 0
    it = iter(range(jobs)) if jobs is not None else None

    async def worker() -> None:
        nonlocal count
        while True:
            if it is not None:
                i = next(it, None)
                if i is None:
                    return
            else:
                if time.perf_counter() >= until:  # type: ignore[operator]
                    return
                i = count
            await job(i)  # type: ignore[operator]
            count += 1

    await asyncio.gather(*(worker() for _ in range(qd)))
    return count


async def _stack_run(data_dir: Path, size: int, seconds: float) -> dict[str, float]:
    from archipelago.client import AsyncClient

    c = await AsyncClient.connect(data_dir)
    res: dict[str, float] = {}
    try:
        await c.create("bench", size)
        v = await c.open("bench")
        data = os.urandom(BLOCK)
        nblocks = size // BLOCK

        async def w4m(i: int) -> None:
            await v.write(i * BLOCK, data)

        async def r4m(i: int) -> None:
            (await v.read_reply(i * BLOCK, BLOCK)).release()  # zero-copy view, no Python copy

        t = time.perf_counter()
        await _workers(QD_BIG, w4m, jobs=nblocks)
        await v.flush()
        res["4m_write"] = size / MiB / (time.perf_counter() - t)
        t = time.perf_counter()
        await _workers(QD_BIG, r4m, jobs=nblocks)
        res["4m_read"] = size / MiB / (time.perf_counter() - t)
        small = os.urandom(SMALL)
        for kind in ("4k_write", "4k_read"):
            rng = random.Random(1)

            async def one(_: int, kind: str = kind, rng: random.Random = rng) -> None:
                off = rng.randrange(size // SMALL) * SMALL
                if kind == "4k_write":
                    await v.write(off, small)
                else:
                    (await v.read_reply(off, SMALL)).release()

            t = time.perf_counter()
            n = await _workers(QD_SMALL, one, until=t + seconds)
            if kind == "4k_write":
                await v.flush()
            res[kind] = n / (time.perf_counter() - t)
        await v.close()
        times = []
        for i in range(CLONES):
            t = time.perf_counter()
            await c.snapshot("bench", f"bench-s{i}")
            await c.clone(f"bench-s{i}", f"bench-c{i}")
            times.append(time.perf_counter() - t)
        res["clone_s"] = statistics.median(times)
    finally:
        c.close()
    return res


def _rbd_clone_run(conf: str, size: int) -> float:
    """Median seconds of snap create + protect + clone of a fully written image."""
    import rados
    import rbd

    cl = rados.Rados(conffile=conf, conf={"rbd_cache": "false"})
    cl.connect(timeout=30)
    io = cl.open_ioctx(POOL)
    name = f"bench-clone-{uuid.uuid4().hex[:8]}"
    r = rbd.RBD()
    r.create(io, name, size, order=22, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
    clones: list[str] = []
    times: list[float] = []
    try:
        with rbd.Image(io, name) as img:
            data = os.urandom(BLOCK)
            comps = [img.aio_write(data, o, lambda *_: None) for o in range(0, size, BLOCK)]
            for comp in comps:
                comp.wait_for_complete_and_cb()
            img.flush()
            for i in range(CLONES):
                t = time.perf_counter()
                img.create_snap(f"s{i}")
                img.protect_snap(f"s{i}")
                r.clone(io, name, f"s{i}", io, f"{name}-c{i}", features=rbd.RBD_FEATURE_LAYERING)
                times.append(time.perf_counter() - t)
                clones.append(f"{name}-c{i}")
    finally:
        for cname in clones:
            r.remove(io, cname)
        with rbd.Image(io, name) as img:
            for s in list(img.list_snaps()):
                if img.is_protected_snap(s["name"]):
                    img.unprotect_snap(s["name"])
                img.remove_snap(s["name"])
        r.remove(io, name)
        io.close()
        cl.shutdown()
    return statistics.median(times)


def _stack_round(conf: str, size: int, seconds: float, runner: object,
                 env: dict[str, str] | None = None) -> dict[str, float]:
    """One archipelago run in a fresh daemon (environment += ``env``) and namespace
    (removed afterwards)."""
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    data_dir = Path(tempfile.mkdtemp(prefix="archip-bench-"))
    try:
        _archip(data_dir, "daemon", "start", "--no-nbd", "--backend", "rados", "--ceph-conf",
                conf, "--pool", POOL, "--namespace", ns, env=env)
        return runner(_stack_run(data_dir, size, seconds))  # type: ignore[operator]
    finally:
        subprocess.run([sys.executable, "-m", "control", "--data-dir", str(data_dir), "daemon",
                        "stop"], capture_output=True, timeout=120, cwd=ROOT, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)
        purge(conf, ns, POOL)


#: The stack without the mapper peer's direct RADOS I/O (service/rados_io.py): the A/B side.
NO_FAST = {"ARCHIPELAGO_RADOS_NO_FAST": "1"}


def _bench(conf: str, size: int, seconds: float, rounds: int, ab: bool = False
           ) -> list[list[dict[str, float]]]:
    """Alternate librbd, RadosBlocker, the stack (and with ``ab`` the stack without
    direct RADOS I/O) for ``rounds`` rounds; every side's results per round."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    runs: list[list[dict[str, float]]] = [[], [], [], []]
    for _ in range(rounds):
        rbd_res = _rbd_run(conf, size, seconds)
        rbd_res["clone_s"] = _rbd_clone_run(conf, size)
        runs[1].append(rbd_res)
        # Reference: the RadosBlocker alone, in this process (what the stack adds on top).
        runs[2].append(runner(_blocker_run(conf, size, seconds)))
        runs[0].append(_stack_round(conf, size, seconds, runner))
        if ab:
            runs[3].append(_stack_round(conf, size, seconds, runner, NO_FAST))
    return runs


def _med(runs: list[dict[str, float]], k: str) -> tuple[float, float, float]:
    """(median, min, max) of ``k`` over rounds (0s if absent)."""
    vals = [r[k] for r in runs if k in r]
    return (statistics.median(vals), min(vals), max(vals)) if vals else (0.0, 0.0, 0.0)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ceph-conf", help="an existing cluster (default: start a throwaway one)")
    ap.add_argument("--size", type=int, default=256, help="MiB per side (default 256)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per random 4 KiB test")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds; medians with [min-max] (default 3)")
    ap.add_argument("--ab", action="store_true",
                    help="also run the stack without direct RADOS I/O "
                         "(ARCHIPELAGO_RADOS_NO_FAST=1), interleaved")
    a = ap.parse_args(argv)
    size = max(1, a.size // 4) * BLOCK
    with throwaway_cluster(a.ceph_conf, 6 * a.size + 1024) as conf:
        runs = _bench(conf, size, a.seconds, max(1, a.rounds), a.ab)
    load = os.getloadavg()
    print(f"archipelago daemon on rados (client library) vs librbd (python3-rbd aio), "
          f"{size // MiB} MiB, QD {QD_BIG} (4 MiB) / {QD_SMALL} (4 KiB), median [min-max] of "
          f"{a.rounds} rounds, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    units = {"4m_write": "MiB/s", "4m_read": "MiB/s", "4k_write": "IOPS", "4k_read": "IOPS",
             "clone_s": "ms"}
    sides = [("archipelago", 0), ("librbd", 1), ("blocker", 2)] + (
        [("no-direct", 3)] if a.ab else [])
    ratio: dict[str, float] = {}
    for k, unit in units.items():
        scale = 1000.0 if k == "clone_s" else 1.0
        cells = []
        for label, i in sides:
            m, lo, hi = _med(runs[i], k)
            if m:
                cells.append(f"{label} {m * scale:.0f} [{lo * scale:.0f}-{hi * scale:.0f}]")
        per_round = [r0[k] / r1[k] for r0, r1 in zip(runs[0], runs[1], strict=True) if r1.get(k)]
        ratio[k] = statistics.median(per_round) if per_round else 0.0
        rng = f"[{min(per_round):.2f}-{max(per_round):.2f}]" if per_round else ""
        print(f"{k + ' ' + unit:<16} ratio {ratio[k]:.2f} {rng}  " + "  ".join(cells))
        if a.ab:
            ab_r = [r3[k] / r1[k] for r3, r1 in zip(runs[3], runs[1], strict=True) if r1.get(k)]
            if ab_r:
                print(f"{'':<16} no-direct ratio {statistics.median(ab_r):.2f} "
                      f"[{min(ab_r):.2f}-{max(ab_r):.2f}]")
    print("ratios: archipelago/librbd per round, median [min-max] (throughput: higher is "
          "better; clone: time, lower is better; rbd = snap create + protect + clone)")
    print("blocker = RadosBlocker alone (benchmarks.rados), no daemon; no-direct = the stack "
          "with the mapper peer's direct RADOS I/O off")
    print(f"rados_stack: ratio_4k_write={ratio['4k_write']:.2f} "
          f"ratio_4k_read={ratio['4k_read']:.2f}")
    print(f"rados_stack: ratio_4m_write={ratio['4m_write']:.2f} "
          f"ratio_4m_read={ratio['4m_read']:.2f} clone_ratio={ratio['clone_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
