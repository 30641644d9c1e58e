"""The gateway against a real OpenStack Swift, side by side on one machine.

Both store on the same tmpfs (/dev/shm), both answer MD5 ETags, and the same aiohttp
client drives both: 64 MiB PUT then GET with 1 and with 4 concurrent clients, 4 KiB
PUT then GET with 8 clients, and the servers' CPU seconds per GiB moved (user+system
of the gateway process; of Swift's proxy, account, container and object servers).
Rounds are interleaved (gateway then Swift, then Swift then gateway, ...) and every
figure is the median of the rounds; each round writes new content, so neither side
deduplicates against an earlier round. The last line is machine-readable:

    swift-ratio: put64_1=<x> put64_4=<x> get64_1=<x> get64_4=<x> put4k=<x> get4k=<x>

(gateway / Swift: above 1 the gateway is faster). Usage:
.venv/bin/python -m benchmarks.swift_compare [--rounds 3] [--venv DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import uvloop

from benchmarks.gateway import (
    BLOCK,
    MiB,
    add_user,
    blocks_of,
    login,
    small_bodies,
    small_objects,
    start_gateway,
    stream,
)
from benchmarks.swift_aio import DEFAULT_VENV, KEY, USER, SwiftAIO

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


async def _timed(pids: list[int], work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, server CPU seconds) of awaiting ``work()``."""
    c0, t0 = cpu_seconds(pids), time.perf_counter()
    await work()  # type: ignore[misc]
    return time.perf_counter() - t0, cpu_seconds(pids) - c0


async def measure(url: str, user: str, key: str, pids: list[int], seed: int,
                  base: bytes, small: int) -> dict[str, float]:
    """One round against one server."""
    res: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as s:
        su, tok = await login(s, url, user, key)
        h = {"X-Auth-Token": tok}
        async with s.put(f"{su}/b{seed}", headers=h) as r:
            assert r.status in (201, 202), r.status
        for clients in (1, 4):
            objs = [blocks_of(seed * 100 + clients * 10 + i, 64 * MiB, base)
                    for i in range(clients)]
            names = [f"{su}/b{seed}/big{clients}-{i}" for i in range(clients)]

            async def put_one(i: int, names: list[str] = names,
                              objs: list[list[bytes]] = objs) -> None:
                async with s.put(names[i], data=stream(objs[i]), headers=h) as r:
                    assert r.status == 201, await r.text()

            async def get_one(i: int, names: list[str] = names) -> None:
                got = 0
                async with s.get(names[i], headers=h) as r:
                    async for chunk in r.content.iter_chunked(1 << 20):
                        got += len(chunk)
                assert got == 64 * MiB

            gib = clients * 64 / 1024
            for op, fn in (("put", put_one), ("get", get_one)):
                wall, cpu = await _timed(pids, lambda fn=fn, n=clients: asyncio.gather(
                    *(fn(i) for i in range(n))))
                res[f"{op}64_{clients}"] = clients * 64 / wall
                res[f"{op}64_{clients}_cpu"] = cpu / gib
        bodies = small_bodies(base)
        names = [f"{su}/b{seed}/small/{i}" for i in range(small)]
        for method in ("put", "get"):
            wall, _ = await _timed(pids, lambda m=method: small_objects(s, h, m, names, bodies))
            res[f"{method}4k"] = small / wall
    return res


def main() -> int:
    """Run the interleaved rounds and print both sides and the ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--small", type=int, default=1000, help="4 KiB objects per round")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="venv with pip swift")
    args = p.parse_args()
    base = os.urandom(BLOCK)
    data_dir = Path(tempfile.mkdtemp(prefix="gw-vs-swift-", dir="/dev/shm"))
    # The gateway's own v1 users, as `python -m pithos_gw.server` serves them.
    (data_dir / "archipelago.toml").write_text("[control]\nplugins = []\n")
    gw_key = add_user(data_dir)
    proc, gw_url = start_gateway(data_dir, fsync=False)
    runs: dict[str, list[dict[str, float]]] = {"gateway": [], "swift": []}
    try:
        with SwiftAIO(args.venv) as swift:
            sides = {"gateway": (gw_url, "bench", gw_key, [proc.pid]),
                     "swift": (swift.url, USER, KEY, swift.pids)}
            for rnd in range(args.rounds):
                order = ["gateway", "swift"] if rnd % 2 == 0 else ["swift", "gateway"]
                for side in order:
                    url, user, key, pids = sides[side]
                    runs[side].append(uvloop.run(measure(url, user, key, pids, rnd + 1, base,
                                                         args.small)))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data_dir, ignore_errors=True)
    med = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for side, rs in runs.items()}
    g, sw = med["gateway"], med["swift"]
    print(f"median of {args.rounds} interleaved rounds; load {os.getloadavg()[0]:.1f}")
    print(f"{'':22}{'gateway':>10}{'swift':>10}{'ratio':>8}")
    rows = [("64 MiB PUT, 1 client", "put64_1", "MiB/s"), ("64 MiB PUT, 4 clients", "put64_4",
            "MiB/s"), ("64 MiB GET, 1 client", "get64_1", "MiB/s"),
            ("64 MiB GET, 4 clients", "get64_4", "MiB/s"), ("4 KiB PUT, 8 clients", "put4k",
            "req/s"), ("4 KiB GET, 8 clients", "get4k", "req/s")]
    for label, k, unit in rows:
        print(f"{label:22}{g[k]:10.1f}{sw[k]:10.1f}{g[k] / sw[k]:8.2f}  {unit}")
    for k in ("put64_1_cpu", "put64_4_cpu", "get64_1_cpu", "get64_4_cpu"):
        print(f"CPU s/GiB {k[:-4]:12}{g[k]:10.2f}{sw[k]:10.2f}")
    print("swift-ratio: " + " ".join(f"{k}={g[k] / sw[k]:.2f}" for _, k, _ in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
