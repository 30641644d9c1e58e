"""GC benchmark: mark and sweep of 1,000 volumes, 100 GiB each (97.7 TiB of maps, mostly
shared: all are thin clones of one 100 GiB image whose 25,600 entries are content blocks;
each clone then writes one block of its own), plus garbage: 50 more clones snapshotted
and removed (their written blocks leak).

Blocks are tiny (the GC reads maps, never block data), so the store stays small; the
file backend keeps 7,000+ entry chunks (135 KiB each, ~1 GB) in ``--dir``.
The last line is:

    gc: volumes=<n> logical_tib=<x> memory_s=<a> file_s=<b>

Usage: .venv/bin/python -m benchmarks.gc [--volumes 1000] [--size-gib 100] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import tempfile
import time

from archipelago.blocker.base import Blocker
from archipelago.blocker.file import FileBlocker
from archipelago.blocker.memory import MemoryBlocker
from archipelago.mapper import Mapper
from archipelago.upkeep.gc import collect

GiB = 1 << 30
BS = 4 << 20


async def build(b: Blocker, volumes: int, size: int) -> None:
    """The image, its clones (one written block each) and some removed volumes."""
    m = Mapper(b, "bench-gc:1")
    n = size // BS
    hashes = []
    for i in range(n):
        data = i.to_bytes(8, "big") + b"blk"
        h = hashlib.sha256(data).hexdigest()
        hashes.append(h)
    for k in range(0, n, 256):
        await asyncio.gather(*(b.put(h, b"x", fua=False) for h in hashes[k : k + 256]))
    await m.clone_hashmap("image", hashes, size, readonly=True)
    for k in range(volumes + 50):
        name = f"vm{k:04d}"
        await m.clone("image", name)
        v = await m.open(name)
        await v.write((k % n) * BS, b"\x01" * 4096)
        await v.close()
    for k in range(volumes, volumes + 50):  # snapshot, then remove both: their block leaks
        await m.snapshot(f"vm{k:04d}", f"sn{k:04d}")
        await m.remove(f"vm{k:04d}")
        await m.remove(f"sn{k:04d}")
    await m.close()


async def measure(b: Blocker, volumes: int, size: int) -> tuple[float, dict]:
    """Seconds of one collection (grace 0) over a built store."""
    await build(b, volumes, size)
    t = time.perf_counter()
    rep = await collect(b, grace=0, roots=[])
    return time.perf_counter() - t, rep.to_dict()


def main() -> None:
    """Run both backends and print the summary line."""
    p = argparse.ArgumentParser()
    p.add_argument("--volumes", type=int, default=1000)
    p.add_argument("--size-gib", type=int, default=100)
    p.add_argument("--dir", default=tempfile.gettempdir())
    p.add_argument("--only", choices=("memory", "file"), default=None)
    a = p.parse_args()
    size = a.size_gib * GiB
    out = {}
    if a.only in (None, "memory"):
        out["memory"], rep = asyncio.run(measure(MemoryBlocker(), a.volumes, size))
        print("memory:", rep, flush=True)
    if a.only in (None, "file"):
        d = tempfile.mkdtemp(prefix="bench-gc-", dir=a.dir)
        try:
            async def on_file() -> tuple[float, dict]:
                b = FileBlocker(os.path.join(d, "store"), fsync=False)
                try:
                    return await measure(b, a.volumes, size)
                finally:
                    await b.close()

            out["file"], rep = asyncio.run(on_file())
            print("file:", rep, flush=True)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    tib = a.volumes * size / (1 << 40)
    print(f"gc: volumes={a.volumes} logical_tib={tib:.1f} "
          + " ".join(f"{k}_s={v:.1f}" for k, v in out.items()))


if __name__ == "__main__":
    main()
