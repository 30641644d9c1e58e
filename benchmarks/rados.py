"""RADOS benchmark: RadosBlocker against librbd (python3-rbd) on the same cluster.

Same pool, same data size, same queue depth on both sides: sequential 4 MiB writes
and reads over SIZE bytes (RadosBlocker: one 4 MiB object per block, as archipelago
stores blocks; librbd: an image of SIZE bytes with 4 MiB objects, layering only,
rbd cache off), then random 4 KiB writes and reads over the same range for a fixed
time. Prints MiB/s or IOPS side by side and the ratio blocker/librbd; the last line
is machine-readable:

    rados: ratio_4m_write=<x> ratio_4m_read=<y>

Usage: .venv/bin/python -m benchmarks.rados [--ceph-conf PATH] [--size 256] [--seconds 3]
Without --ceph-conf it starts (and always stops) a memstore cluster of its own with
testbed/ceph_cluster.py. Numbers are CPU-bound on small machines: compare only runs
made back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

from testbed.ceph import throwaway_cluster

MiB = 1 << 20
BLOCK = 4 * MiB
SMALL = 4096
QD_BIG = 16
QD_SMALL = 32
POOL = "archipelago-test"


# -- the archipelago side -------------------------------------------------------------

async def _blocker_run(conf: str, size: int, seconds: float) -> dict[str, float]:
    from archipelago.blocker.rados import RadosBlocker

    b = RadosBlocker(conf, POOL, namespace=f"bench-{uuid.uuid4().hex[:8]}", timeout=60)
    nblocks = size // BLOCK
    names = [f"blk-{i:06d}" for i in range(nblocks)]
    data = os.urandom(BLOCK)
    res: dict[str, float] = {}
    try:
        await b.open()

        async def pool_of(qd: int, jobs: list[Callable[[], object]]) -> None:
            it = iter(jobs)

            async def worker() -> None:
                for job in it:
                    await job()  # type: ignore[misc]

            await asyncio.gather(*(worker() for _ in range(qd)))

        t = time.perf_counter()
        await pool_of(QD_BIG, [lambda n=n: b.write(n, 0, data) for n in names])
        res["4m_write"] = size / MiB / (time.perf_counter() - t)
        t = time.perf_counter()
        await pool_of(QD_BIG, [lambda n=n: b.read(n, 0, BLOCK) for n in names])
        res["4m_read"] = size / MiB / (time.perf_counter() - t)

        small = os.urandom(SMALL)
        for kind in ("4k_write", "4k_read"):
            rng = random.Random(1)
            count = 0
            end = time.perf_counter() + seconds

            async def worker(kind: str = kind, rng: random.Random = rng, end: float = end) -> None:
                nonlocal count
                while time.perf_counter() < end:
                    off = rng.randrange(size // SMALL) * SMALL
                    name, inner = names[off // BLOCK], off % BLOCK
                    if kind == "4k_write":
                        await b.write(name, inner, small)
                    else:
                        await b.read(name, inner, SMALL)
                    count += 1

            t = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(QD_SMALL)))
            res[kind] = count / (time.perf_counter() - t)
    finally:
        for n in await b.list():
            await b.delete(n)
        await b.close()
    return res


# -- the librbd side ------------------------------------------------------------------

def _rbd_run(conf: str, size: int, seconds: float) -> dict[str, float]:
    import rados
    import rbd

    cl = rados.Rados(conffile=conf, conf={"rbd_cache": "false"})
    cl.connect(timeout=30)
    io = cl.open_ioctx(POOL)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    rbd.RBD().create(io, name, size, order=22, old_format=False,
                     features=rbd.RBD_FEATURE_LAYERING)
    res: dict[str, float] = {}
    try:
        img = rbd.Image(io, name)
        try:
            data = os.urandom(BLOCK)

            def run(qd: int, ops: list[Callable[[Callable[..., None]], object]]) -> None:
                sem = threading.BoundedSemaphore(qd)
                errors: list[int] = []

                def done(c: object, *_: object) -> None:
                    rv = c.get_return_value()  # type: ignore[attr-defined]
                    if rv < 0:
                        errors.append(rv)
                    sem.release()

                for op in ops:
                    sem.acquire()
                    op(done)
                for _ in range(qd):
                    sem.acquire()
                if errors:
                    raise RuntimeError(f"librbd errors: {errors[:3]}")

            offs = range(0, size, BLOCK)
            t = time.perf_counter()
            run(QD_BIG, [lambda cb, o=o: img.aio_write(data, o, cb) for o in offs])
            res["4m_write"] = size / MiB / (time.perf_counter() - t)
            t = time.perf_counter()
            run(QD_BIG, [lambda cb, o=o: img.aio_read(o, BLOCK, cb) for o in offs])
            res["4m_read"] = size / MiB / (time.perf_counter() - t)

            small = os.urandom(SMALL)
            for kind in ("4k_write", "4k_read"):
                rng = random.Random(1)
                end = time.perf_counter() + seconds

                def ops(kind: str = kind, rng: random.Random = rng, end: float = end):  # noqa: ANN202
                    while time.perf_counter() < end:
                        off = rng.randrange(size // SMALL) * SMALL
                        if kind == "4k_write":
                            yield lambda cb, o=off: img.aio_write(small, o, cb)
                        else:
                            yield lambda cb, o=off: img.aio_read(o, SMALL, cb)

                count = 0

                def counted(kind: str = kind):  # noqa: ANN202
                    nonlocal count
                    for op in ops(kind):
                        count += 1
                        yield op

                t = time.perf_counter()
                run(QD_SMALL, counted())  # type: ignore[arg-type]
                res[kind] = count / (time.perf_counter() - t)
        finally:
            img.close()
    finally:
        rbd.RBD().remove(io, name)
        io.close()
        cl.shutdown()
    return res


# -- `rbd bench`: librbd from C++, no Python on the client side (reference only) ---------

def _rbd_cli_run(conf: str, size: int) -> dict[str, float]:
    name = f"{POOL}/bench-cli-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CEPH_CONF": conf}

    def rbd(*args: str) -> str:
        return subprocess.run(["rbd", *args], env=env, capture_output=True, text=True,
                              timeout=300, check=True).stdout

    units = {"B/s": 1 / MiB, "KiB/s": 1 / 1024, "MiB/s": 1.0, "GiB/s": 1024.0}
    rbd("create", "--size", f"{size // MiB}M", "--image-feature", "layering", name)
    res: dict[str, float] = {}
    try:
        for key, io_type, io_size, threads, total, pattern in (
            ("4m_write", "write", "4M", QD_BIG, size, "seq"),
            ("4m_read", "read", "4M", QD_BIG, size, "seq"),
            ("4k_write", "write", "4K", QD_SMALL, 64 * MiB, "rand"),
            ("4k_read", "read", "4K", QD_SMALL, 128 * MiB, "rand"),
        ):
            out = rbd("bench", "--io-type", io_type, "--io-size", io_size, "--io-threads",
                      str(threads), "--io-total", str(total), "--io-pattern", pattern,
                      "--rbd-cache=false", name)
            last = out.strip().splitlines()[-1].split()  # elapsed: N ops: N ops/sec: X bytes/sec: Y U
            if key.startswith("4m"):
                res[key] = float(last[-2]) * units.get(last[-1], 1.0)
            else:
                res[key] = float(last[last.index("ops/sec:") + 1])
    finally:
        subprocess.run(["rbd", "rm", name], env=env, capture_output=True, timeout=120,
                       check=False)
    return res


# -- driver ---------------------------------------------------------------------------

def _bench(conf: str, size: int, seconds: float
           ) -> dict[str, tuple[float, float, float]]:
    try:
        import uvloop

        runner: Callable[..., dict[str, float]] = uvloop.run  # the daemon's event loop
    except ImportError:
        runner = asyncio.run
    # librbd first, then the blocker, then both again: the better of two back-to-back runs.
    best_b: dict[str, float] = {}
    best_r: dict[str, float] = {}
    best_c: dict[str, float] = {}
    for _ in range(2):
        for k, v in _rbd_run(conf, size, seconds).items():
            best_r[k] = max(best_r.get(k, 0.0), v)
        for k, v in runner(_blocker_run(conf, size, seconds)).items():
            best_b[k] = max(best_b.get(k, 0.0), v)
        for k, v in _rbd_cli_run(conf, size).items():
            best_c[k] = max(best_c.get(k, 0.0), v)
    return {k: (best_b[k], best_r[k], best_c[k]) for k in best_r}



def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ceph-conf", help="an existing cluster (default: start a throwaway one)")
    ap.add_argument("--size", type=int, default=256, help="MiB per side (default 256)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per random 4 KiB test")
    a = ap.parse_args(argv)
    size = max(1, a.size // 4) * BLOCK
    with throwaway_cluster(a.ceph_conf, 4 * a.size + 1024) as conf:
        results = _bench(conf, size, a.seconds)
    print(f"RadosBlocker vs librbd, {size // MiB} MiB, QD {QD_BIG} (4 MiB) / {QD_SMALL} (4 KiB)")
    print("librbd = python3-rbd aio (the ratio's base); rbd-bench = `rbd bench` (C++ client)")
    print(f"{'test':<16}{'blocker':>10}{'librbd':>10}{'ratio':>7}{'rbd-bench':>11}{'ratio':>7}")
    units = {"4m_write": "MiB/s", "4m_read": "MiB/s", "4k_write": "IOPS", "4k_read": "IOPS"}
    ratio = {}
    for k, (bv, rv, cv) in results.items():
        ratio[k] = bv / rv if rv else 0.0
        print(f"{k + ' ' + units[k]:<16}{bv:>10.0f}{rv:>10.0f}{ratio[k]:>7.2f}{cv:>11.0f}"
              f"{(bv / cv if cv else 0.0):>7.2f}")
    print(f"rados: ratio_4k_write={ratio['4k_write']:.2f} ratio_4k_read={ratio['4k_read']:.2f}")
    print(f"rados: ratio_4m_write={ratio['4m_write']:.2f} ratio_4m_read={ratio['4m_read']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
