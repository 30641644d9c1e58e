"""Mapper benchmark: snapshot and clone time by volume size, write cost of copy-up.

Runs on the file blocker in a RAM-backed (tmpfs) directory. Volumes are sparse but
every entry chunk is stored (one small write per 4096 blocks), the worst case for
map I/O at a given size: a 1 TiB map is 64 chunks, 8.3 MiB. Write throughput is
4 KiB random writes at queue depth 16 into owned blocks (no copy-up) and into blocks
shared with a snapshot (every write copies its 4 MiB block up once), plus whole-block
4 MiB writes both ways (whole-block writes skip the copy). The last line is:

    mapper: clone_1tib_ms=<x> cow_write_ratio=<y>

(cow_write_ratio = 4 KiB copy-up write throughput / 4 KiB in-place write throughput.)
Usage: .venv/bin/python -m benchmarks.mapper [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable

from archipelago.blocker.file import FileBlocker
from archipelago.mapper import Mapper, Volume

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
BS = 4 * MiB
QD = 16


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    """Seconds one call takes."""
    t = time.perf_counter()
    await fn()
    return time.perf_counter() - t


async def fill_chunks(v: Volume, size: int) -> None:
    """One 4 KiB write per 4096 blocks: every map chunk stored, data stays sparse."""
    for i in range(0, size // BS, 4096):
        await v.write(i * BS, b"d" * 4096)
    await v.flush()


async def writes(v: Volume, offsets: list[int], n: int) -> float:
    """Seconds for writes of n bytes at the offsets, QD writes in flight."""
    data = random.randbytes(n)
    sem = asyncio.Semaphore(QD)

    async def one(off: int) -> None:
        async with sem:
            await v.write(off, data)

    t = time.perf_counter()
    await asyncio.gather(*(one(o) for o in offsets))
    await v.flush()
    return time.perf_counter() - t


async def bench_sizes(m: Mapper) -> dict[str, float]:
    """Snapshot and clone time (ms) for 1 GiB, 100 GiB and 1 TiB volumes."""
    out: dict[str, float] = {}
    for label, size in (("1gib", GiB), ("100gib", 100 * GiB), ("1tib", TiB)):
        await m.create(f"vol{label}", size)
        v = await m.open(f"vol{label}")
        await fill_chunks(v, size)
        snaps, clones = [], []
        for r in range(5):
            vol, snap, clone = f"vol{label}", f"snap{label}{r}", f"clone{label}{r}"
            snaps.append(await timed(lambda v=vol, s=snap: m.snapshot(v, s)))
            clones.append(await timed(lambda s=snap, c=clone: m.clone(s, c)))
        out[f"snapshot_{label}_ms"] = sorted(snaps)[2] * 1000
        out[f"clone_{label}_ms"] = sorted(clones)[2] * 1000
        h = await m.live(f"vol{label}")
        print(
            f"{label:>7}: {len(h.stored_chunks()):3d} chunks  "
            f"snapshot {out[f'snapshot_{label}_ms']:7.1f} ms  clone {out[f'clone_{label}_ms']:7.1f} ms"
            "  (median of 5)"
        )
        await v.close()
    return out


async def bench_writes(m: Mapper) -> dict[str, float]:
    """Write throughput without and with copy-up (4 KiB random, 4 MiB whole blocks)."""
    nblocks = 128
    await m.create("tp", nblocks * BS)
    v = await m.open("tp")
    await writes(v, [i * BS for i in range(nblocks)], BS)  # every block owned
    rng = random.Random(1)
    small = [rng.randrange(nblocks * BS // 4096) * 4096 for _ in range(4000)]
    t_plain = await writes(v, small, 4096)
    await m.snapshot("tp", "tps")
    cow = [i * BS + rng.randrange(BS // 4096) * 4096 for i in range(nblocks)]
    rng.shuffle(cow)
    t_cow = await writes(v, cow, 4096)
    t_whole_owned = await writes(v, [i * BS for i in range(nblocks)], BS)
    await m.snapshot("tp", "tps2")
    t_whole_shared = await writes(v, [i * BS for i in range(nblocks)], BS)
    await v.close()
    plain_iops, cow_iops = len(small) / t_plain, len(cow) / t_cow
    r = {
        "write4k_plain_iops": plain_iops,
        "write4k_cow_iops": cow_iops,
        "cow_write_ratio": cow_iops / plain_iops,
        "write4m_owned_mibs": nblocks * 4 / t_whole_owned,
        "write4m_shared_mibs": nblocks * 4 / t_whole_shared,
    }
    print(
        f"4 KiB random writes QD{QD}: in place {plain_iops:8.0f} IOPS, "
        f"with copy-up {cow_iops:8.0f} IOPS, ratio {r['cow_write_ratio']:.3f}"
    )
    print(
        f"4 MiB whole-block writes: owned {r['write4m_owned_mibs']:7.0f} MiB/s, "
        f"shared (no copy needed) {r['write4m_shared_mibs']:7.0f} MiB/s, "
        f"ratio {r['write4m_shared_mibs'] / r['write4m_owned_mibs']:.3f}"
    )
    return r


async def main_async(root: str) -> None:
    """Run every measurement on one fresh store."""
    b = FileBlocker(root)
    m = Mapper(b, "bench:1")
    try:
        sizes = await bench_sizes(m)
        w = await bench_writes(m)
    finally:
        await m.close()
        await b.close()
    print(f"mapper: clone_1tib_ms={sizes['clone_1tib_ms']:.1f} cow_write_ratio={w['cow_write_ratio']:.3f}")


def main() -> None:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/dev/shm", help="parent of the temporary store (tmpfs)")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="mapper-bench-", dir=args.dir)
    try:
        asyncio.run(main_async(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
