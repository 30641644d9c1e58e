"""Scale benchmark: how time per operation and memory per process grow with the number of
volumes, open volumes and NBD connections, clone depth and volume size (issue 20).

One daemon (file blocker on /dev/shm, fsync off: this measures the metadata paths, not a
disk), driven through the client library and libnbd:

- volumes: create N volumes; time per create and per full listing at every 10 % of N;
- open: 64 NBD connections (one volume each, a 4 KiB write + read) plus client handles
  on 36 more, 100 open at once; time per open and RSS of nbdkit and the mapper peer;
- clone chain: snapshot + clone 100 deep; time per step, and open + first read of the
  first written block at depth d;
- big volume: a 100 TiB volume with 1,000 random 4 KiB writes; create/open time and
  mapper RSS per open TiB.

RSS is the private (anonymous) resident memory of each process from /proc (the shared
segment is reported once, as its resident part). Prints a markdown table; --out DIR also
gets scale.json and scale.png (cost against size).
Usage: .venv/bin/python -m benchmarks.scale [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbd

from archipelago.client import Client
from archipelago.instance import Instance

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
ARCHIP = [sys.executable, "-m", "control"]


def archip(data_dir: Path, *args: str) -> str:
    """Run the CLI on the benchmark's instance; its stdout."""
    cmd = [*ARCHIP, "--data-dir", str(data_dir), "-o", "blocker.file.fsync=false", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout


def status_pids(data_dir: Path) -> dict[str, int]:
    """Child name -> pid of the running daemon (mapper, blocker-N, nbdkit)."""
    st = json.loads(archip(data_dir, "--json", "daemon", "status"))
    return {c["name"]: int(c["pid"]) for c in st["children"] if c.get("pid")}


def rss_kib(pid: int) -> dict[str, int]:
    """RssAnon / RssShmem / VmRSS of a process in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssShmem", "VmRSS"):
                out[key] = int(rest.split()[0])
    return out


def segment_resident_kib(data_dir: Path) -> int:
    """KiB of the shared segment actually committed (its tmpfs blocks)."""
    seg = Path("/dev/shm") / Instance(data_dir.resolve()).segment_name
    return seg.stat().st_blocks // 2


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def med_ms(xs: list[float]) -> float:
    """Median in milliseconds."""
    return statistics.median(xs) * 1000


def bench_volumes(c: Client, n: int, data_dir: Path, pids: dict[str, int]) -> list[dict[str, Any]]:
    """Create n volumes; per tenth: median create time, listing time, mapper RSS."""
    rows, step, creates = [], max(1, n // 10), []
    for i in range(n):
        creates.append(timed(lambda i=i: c.create(f"v{i:05d}", GiB)))
        if (i + 1) % step == 0:
            listing = min(timed(c.list) for _ in range(3))
            assert len(c.list()) == i + 1
            rows.append({"volumes": i + 1, "create_ms": med_ms(creates[-step:]),
                         "list_ms": listing * 1000, "per_volume_list_us": listing / (i + 1) * 1e6,
                         "mapper_anon_kib": rss_kib(pids["mapper"])["RssAnon"],
                         "segment_kib": segment_resident_kib(data_dir)})
    return rows


def connect(sock: Path, export: str) -> nbd.NBD:
    """A libnbd handle on one export of the daemon's NBD socket."""
    h = nbd.NBD()
    h.set_export_name(export)
    h.connect_unix(str(sock))
    return h


def bench_open(c: Client, data_dir: Path, pids: dict[str, int], conns: int, total: int
               ) -> list[dict[str, Any]]:
    """NBD connections one per volume, then client handles up to ``total`` open volumes."""
    sock, nbd_pid = data_dir / "nbd.sock", pids["nbdkit"]
    handles: list[nbd.NBD] = []
    opens: list[Any] = []
    rows: list[dict[str, Any]] = []
    marks = {1, conns // 4, conns // 2, conns}
    buf = os.urandom(4 * KiB)
    try:
        for i in range(conns):
            t = time.perf_counter()
            h = connect(sock, f"v{i:05d}")
            h.pwrite(buf, i * 4 * MiB % GiB)
            assert h.pread(4 * KiB, i * 4 * MiB % GiB) == buf
            dt = time.perf_counter() - t
            handles.append(h)
            if i + 1 in marks:
                rows.append({"open": i + 1, "nbd_connections": i + 1,
                             "connect_rw_ms": dt * 1000,
                             "nbdkit_anon_kib": rss_kib(nbd_pid)["RssAnon"],
                             "mapper_anon_kib": rss_kib(pids["mapper"])["RssAnon"]})
        for i in range(conns, total):
            t = time.perf_counter()
            opens.append(c.open(f"v{i:05d}"))
            dt = time.perf_counter() - t
        rows.append({"open": total, "nbd_connections": conns, "connect_rw_ms": dt * 1000,
                     "nbdkit_anon_kib": rss_kib(nbd_pid)["RssAnon"],
                     "mapper_anon_kib": rss_kib(pids["mapper"])["RssAnon"]})
    finally:
        for v in opens:
            v.close()
        for h in handles:
            h.shutdown()
        handles.clear()  # libnbd closes a handle when it is freed
    return rows


def bench_chain(c: Client, depth: int) -> list[dict[str, Any]]:
    """Snapshot + clone ``depth`` deep; per step time, and open + first read at depth."""
    c.create("c0", GiB)
    with c.open("c0") as v:
        v.write(0, b"first" * 800, fua=True)
    rows, marks = [], {1, 10, depth // 2, depth}
    for d in range(1, depth + 1):
        def step(d: int = d) -> None:
            c.snapshot(f"c{d - 1}", f"s{d}")
            c.clone(f"s{d}", f"c{d}")
        dt = timed(step)
        if d in marks:
            t = time.perf_counter()
            with c.open(f"c{d}") as v:
                assert bytes(v.read(0, 4000)) == b"first" * 800
            rows.append({"depth": d, "snapshot_clone_ms": dt * 1000,
                         "open_first_read_ms": (time.perf_counter() - t) * 1000})
    return rows


def bench_big(c: Client, pids: dict[str, int], size: int, writes: int) -> dict[str, Any]:
    """A ``size`` volume: create, open, random 4 KiB writes; mapper RSS per open TiB."""
    before = rss_kib(pids["mapper"])["RssAnon"]
    t_create = timed(lambda: c.create("big", size))
    t = time.perf_counter()
    v = c.open("big")
    t_open = time.perf_counter() - t
    opened = rss_kib(pids["mapper"])["RssAnon"]
    rng = random.Random(7)
    t = time.perf_counter()
    for _ in range(writes):
        v.write(rng.randrange(size // (4 * KiB)) * 4 * KiB, b"w" * 4 * KiB)
    v.flush()
    t_writes = time.perf_counter() - t
    written = rss_kib(pids["mapper"])["RssAnon"]
    v.close()
    tib = size / TiB
    return {"size_tib": tib, "create_ms": t_create * 1000, "open_ms": t_open * 1000,
            "write_4k_ms": t_writes / writes * 1000, "writes": writes,
            "mapper_open_kib_per_tib": (opened - before) / tib,
            "mapper_written_kib_per_tib": (written - before) / tib}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of uniform rows."""
    keys = list(rows[0])
    fmt = lambda x: f"{x:.3g}" if isinstance(x, float) else str(x)  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                     + ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows])


def plot(res: dict[str, Any], out: Path) -> Path:
    """Four panels of cost against size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    vol, op, ch = res["volumes"], res["open"], res["chain"]
    ax[0][0].plot([r["volumes"] for r in vol], [r["create_ms"] for r in vol], "o-", label="create")
    ax[0][0].plot([r["volumes"] for r in vol], [r["list_ms"] for r in vol], "s-", label="list all")
    ax[0][0].set(xlabel="volumes", ylabel="ms", title="create / list")
    ax[0][1].plot([r["volumes"] for r in vol], [r["mapper_anon_kib"] / 1024 for r in vol], "o-")
    ax[0][1].set(xlabel="volumes", ylabel="mapper RSS (MiB)", title="mapper memory")
    ax[1][0].plot([r["open"] for r in op], [r["nbdkit_anon_kib"] / 1024 for r in op], "o-",
                  label="nbdkit")
    ax[1][0].plot([r["open"] for r in op], [r["mapper_anon_kib"] / 1024 for r in op], "s-",
                  label="mapper")
    ax[1][0].set(xlabel="open volumes (NBD connections ≤ 64)", ylabel="RSS (MiB)",
                 title="memory per open volume")
    ax[1][1].plot([r["depth"] for r in ch], [r["snapshot_clone_ms"] for r in ch], "o-",
                  label="snapshot+clone")
    ax[1][1].plot([r["depth"] for r in ch], [r["open_first_read_ms"] for r in ch], "s-",
                  label="open+first read")
    ax[1][1].set(xlabel="clone depth", ylabel="ms", title="clone chains")
    for a in (ax[0][0], ax[1][0], ax[1][1]):
        a.legend()
    fig.tight_layout()
    path = out / "scale.png"
    fig.savefig(path, dpi=90)
    return path


def run(quick: bool) -> dict[str, Any]:
    """Start a daemon, run every part, stop it; the results."""
    n, conns, total, depth, big = (200, 32, 50, 30, 10 * TiB) if quick else (
        1000, 64, 100, 100, 100 * TiB)
    d = Path(tempfile.mkdtemp(prefix="bench-scale-", dir="/dev/shm"))
    try:
        archip(d, "daemon", "start", "--json")
        pids = status_pids(d)
        idle = {"segment_kib": segment_resident_kib(d),
                **{k: rss_kib(p)["RssAnon"] for k, p in pids.items()}}
        with Client.connect(d) as c:
            res = {"idle_anon_kib": idle,
                   "volumes": bench_volumes(c, n, d, pids),
                   "open": bench_open(c, d, pids, conns, total),
                   "chain": bench_chain(c, depth),
                   "big": bench_big(c, pids, big, 1000)}
        res["final_segment_kib"] = segment_resident_kib(d)
        return res
    finally:
        try:
            archip(d, "daemon", "stop")
        finally:
            shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    """Run and print the tables (and write scale.json / scale.png with --out)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about 30 s)")
    ap.add_argument("--out", type=Path, help="directory for scale.json and scale.png")
    args = ap.parse_args()
    res = run(args.quick)
    print("idle daemon, private RSS (KiB) and committed segment:", res["idle_anon_kib"])
    for part in ("volumes", "open", "chain"):
        print(f"\n### {part}\n\n{table(res[part])}")
    print(f"\n### big volume\n\n{table([res['big']])}")
    print("\nsegment committed at the end (KiB):", res["final_segment_kib"])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps(res, indent=1))
        print("plot:", plot(res, args.out))


if __name__ == "__main__":
    main()
