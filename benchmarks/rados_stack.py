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
[--seconds 3] [--rounds 2]. Without --ceph-conf it starts (and always stops) a memstore
cluster of its own. The sides alternate for ROUNDS rounds and each keeps its best (2
rounds take about 50 s on 2 cores): numbers are CPU-bound and noisy on busy machines.
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


def _archip(data_dir: Path, *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "control", "--data-dir", str(data_dir), *args],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
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


def _stack_round(conf: str, size: int, seconds: float, runner: object) -> dict[str, float]:
    """One archipelago run in a fresh daemon and namespace (removed afterwards)."""
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    data_dir = Path(tempfile.mkdtemp(prefix="archip-bench-"))
    try:
        _archip(data_dir, "daemon", "start", "--no-nbd", "--backend", "rados", "--ceph-conf",
                conf, "--pool", POOL, "--namespace", ns)
        return runner(_stack_run(data_dir, size, seconds))  # type: ignore[operator]
    finally:
        subprocess.run([sys.executable, "-m", "control", "--data-dir", str(data_dir), "daemon",
                        "stop"], capture_output=True, timeout=120, cwd=ROOT, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)
        purge(conf, ns, POOL)


def _bench(conf: str, size: int, seconds: float, rounds: int
           ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Alternate librbd, RadosBlocker and the stack; keep each side's best of ``rounds``."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    best: list[dict[str, float]] = [{}, {}, {}]

    def keep(side: int, res: dict[str, float]) -> None:
        for k, val in res.items():
            old = best[side].get(k)
            better = min if k == "clone_s" else max  # times: lower is better
            best[side][k] = val if old is None else better(old, val)

    for _ in range(rounds):
        rbd_res = _rbd_run(conf, size, seconds)
        rbd_res["clone_s"] = _rbd_clone_run(conf, size)
        keep(1, rbd_res)
        # Reference: the RadosBlocker alone, in this process (what the stack adds on top).
        keep(2, runner(_blocker_run(conf, size, seconds)))
        keep(0, _stack_round(conf, size, seconds, runner))
    return best[0], best[1], best[2]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ceph-conf", help="an existing cluster (default: start a throwaway one)")
    ap.add_argument("--size", type=int, default=256, help="MiB per side (default 256)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per random 4 KiB test")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternating rounds; each side keeps its best (default 2)")
    a = ap.parse_args(argv)
    size = max(1, a.size // 4) * BLOCK
    with throwaway_cluster(a.ceph_conf, 6 * a.size + 1024) as conf:
        stack, rbd_res, blocker = _bench(conf, size, a.seconds, max(1, a.rounds))
    print(f"archipelago daemon on rados (client library) vs librbd (python3-rbd aio), "
          f"{size // MiB} MiB, QD {QD_BIG} (4 MiB) / {QD_SMALL} (4 KiB), best of {a.rounds}")
    print(f"{'test':<18}{'archipelago':>12}{'librbd':>10}{'ratio':>7}{'blocker':>10}"
          f"{'stack/blocker':>15}")
    units = {"4m_write": "MiB/s", "4m_read": "MiB/s", "4k_write": "IOPS", "4k_read": "IOPS",
             "clone_s": "ms"}
    ratio: dict[str, float] = {}
    for k, unit in units.items():
        sv, rv = stack[k], rbd_res[k]
        ratio[k] = sv / rv if rv else 0.0
        scale = 1000.0 if k == "clone_s" else 1.0
        bv = blocker.get(k)
        ref = f"{bv:>10.1f}{sv / bv:>15.2f}" if bv else f"{'-':>10}{'-':>15}"
        print(f"{k + ' ' + unit:<18}{sv * scale:>12.1f}{rv * scale:>10.1f}{ratio[k]:>7.2f}{ref}")
    print("ratios: throughput archipelago/librbd (higher is better); clone: time "
          "archipelago/librbd (lower is better; rbd = snap create + protect + clone)")
    print("blocker = RadosBlocker alone (benchmarks.rados), no daemon: stack/blocker is what "
          "the client, segment, mapper and blocker peers cost")
    print(f"rados_stack: ratio_4k_write={ratio['4k_write']:.2f} "
          f"ratio_4k_read={ratio['4k_read']:.2f}")
    print(f"rados_stack: ratio_4m_write={ratio['4m_write']:.2f} "
          f"ratio_4m_read={ratio['4m_read']:.2f} clone_ratio={ratio['clone_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
