"""Per-benchmark drivers for the suite: each runs one area's archipelago path(s) and native
peers interleaved, ``repeat`` times, and returns report.Metric records.

Run by the suite in a subprocess (``python -m benchmarks.drivers NAME --mode quick
--repeat 3 --out FILE``) so that a crash or a hang of one benchmark cannot take the suite
down. The drivers reuse the measuring functions of the area benchmarks (benchmarks/nbd.py,
importer.py, mapper.py, rados.py, gateway.py); peers.py is run as a command and parsed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.drivers_io import run_gateway, run_nbd, run_rados
from benchmarks.measure import Cfg, GiB, add, children_cpu, log, new_metric, pidfile_cpu
from benchmarks.report import Goal, Metric, metrics_to_json

# -- peers ----------------------------------------------------------------------------

_PEERS_RX = {
    "rate": re.compile(r"PING depth (\d+): segment ([\d,]+) msg/s, asyncio unix socket .*? "
                       r"([\d,]+) msg/s"),
    "rtt": re.compile(r"round trip: segment ([\d.]+) us, unix socket ([\d.]+) us"),
    "c": re.compile(r"C client loop.*?: ([\d,]+) msg/s"),
    "payload": re.compile(r"4 MiB payload: segment ([\d.]+) GiB/s, pipe .*? ([\d.]+) GiB/s"),
}


def run_peers(cfg: Cfg) -> list[Metric]:
    """Segment vs asyncio unix socket (messages) and vs a pipe (4 MiB payloads)."""
    flags = ["--pings", "20000", "--mib", "512"] if cfg.quick else []
    b = "peers"
    rate = new_metric(b, "PING messages/s, 32 in flight", "msg/s", True,
                      ["segment (asyncio client)", "segment (C client loop)"],
                      ["asyncio unix socket"], group="throughput",
                      goals=[Goal("asyncio unix socket", 3.0, arch="segment (asyncio client)"),
                             Goal("asyncio unix socket", 5.0, arch="segment (C client loop)")])
    rtt = new_metric(b, "PING round trip, 1 in flight", "µs", False, ["segment (asyncio client)"],
                     ["asyncio unix socket"], goals=[Goal("asyncio unix socket", 1.0)])
    pay = new_metric(b, "4 MiB payload throughput", "GiB/s", True, ["segment"], ["pipe"],
                     goals=[Goal(min_value=3.0)], group="throughput")
    for i in range(cfg.repeat):
        log(f"peers run {i + 1}/{cfg.repeat}")
        out = subprocess.run([sys.executable, "-m", "benchmarks.peers", *flags], check=True,
                             capture_output=True, text=True, timeout=600).stdout
        num = lambda s: float(s.replace(",", ""))  # noqa: E731
        if mt := _PEERS_RX["rate"].search(out):
            add(rate, "segment (asyncio client)", num(mt[2]))
            add(rate, "asyncio unix socket", num(mt[3]))
        if mt := _PEERS_RX["c"].search(out):
            add(rate, "segment (C client loop)", num(mt[1]))
        if mt := _PEERS_RX["rtt"].search(out):
            add(rtt, "segment (asyncio client)", num(mt[1]))
            add(rtt, "asyncio unix socket", num(mt[2]))
        if mt := _PEERS_RX["payload"].search(out):
            add(pay, "segment", num(mt[1]))
            add(pay, "pipe", num(mt[2]))
    return [m for m in (rate, rtt, pay) if m.samples]


# -- mapper ---------------------------------------------------------------------------

SIZES = (("1 GiB", GiB), ("100 GiB", 100 * GiB), ("1 TiB", 1 << 40))


def _qemu_times(d: Path, size: int, reps: int = 5) -> tuple[float, float]:
    """Median seconds of `qemu-img create -b` (overlay) and `qemu-img snapshot -c` (qcow2)."""
    base, q = d / "base.raw", d / "img.qcow2"
    with open(base, "wb") as f:
        f.truncate(size)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(q), str(size)], check=True)
    clones, snaps = [], []
    for r in range(reps):
        t = time.perf_counter()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw",
                        str(d / f"ov{r}.qcow2")], check=True)
        clones.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run(["qemu-img", "snapshot", "-c", f"s{r}", str(q)], check=True)
        snaps.append(time.perf_counter() - t)
    for p in d.iterdir():
        p.unlink()
    return sorted(clones)[reps // 2], sorted(snaps)[reps // 2]


def run_mapper(cfg: Cfg) -> list[Metric]:
    """Snapshot/clone time vs volume size (vs qemu-img), 4 KiB writes with/without copy-up."""
    import asyncio
    import shutil
    import tempfile

    from archipelago.blocker.file import FileBlocker
    from archipelago.mapper import Mapper
    from benchmarks import mapper as mb

    b, arch = "mapper", "archipelago (file blocker)"
    clone = {lbl: new_metric(b, f"clone of a {lbl} volume", "ms", False, [arch],
                             ["qemu-img create -b"], group="clone_size", family="clone", x=sz)
             for lbl, sz in SIZES}
    clone["1 TiB"].goals = [Goal(max_value=100.0)]
    snap = {lbl: new_metric(b, f"snapshot of a {lbl} volume", "ms", False, [arch],
                            ["qemu-img snapshot -c"], group="clone_size", family="snapshot", x=sz)
            for lbl, sz in SIZES}
    cow = new_metric(b, "4 KiB random writes QD16", "IOPS", True, ["with copy-up (after snapshot)"],
                     ["in place (owned blocks)"], internal=True)
    tmp_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    for i in range(cfg.repeat):
        log(f"mapper run {i + 1}/{cfg.repeat}")
        root = tempfile.mkdtemp(prefix="bench-mapper-", dir=tmp_root)
        try:
            async def go(root: str = root) -> tuple[dict[str, float], dict[str, float]]:
                blk = FileBlocker(os.path.join(root, "store"))
                m = Mapper(blk, "bench:1")
                try:
                    return await mb.bench_sizes(m), await mb.bench_writes(m)
                finally:
                    await m.close()
                    await blk.close()

            sizes, w = asyncio.run(go())
            q = Path(root) / "qemu"
            q.mkdir()
            for lbl, sz in SIZES:
                key = lbl.replace(" ", "").lower()
                add(clone[lbl], arch, sizes[f"clone_{key}_ms"])
                add(snap[lbl], arch, sizes[f"snapshot_{key}_ms"])
                qc, qs = _qemu_times(q, sz)
                add(clone[lbl], "qemu-img create -b", qc * 1000)
                add(snap[lbl], "qemu-img snapshot -c", qs * 1000)
            add(cow, "with copy-up (after snapshot)", w["write4k_cow_iops"])
            add(cow, "in place (owned blocks)", w["write4k_plain_iops"])
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return [*clone.values(), *snap.values(), cow]


# -- import ---------------------------------------------------------------------------

def run_import(cfg: Cfg) -> list[Metric]:
    """`archip import` of a mixed image vs sha256sum and cp --sparse=always."""
    import shutil
    import tempfile

    from archipelago.instance import Instance
    from benchmarks import importer as ib

    gib = 0.5 if cfg.quick else 2.0
    size = int(gib * GiB) // ib.BS * ib.BS
    b, arch = "import", "archip import (file blocker)"
    m = new_metric(b, f"import of a {gib:g} GiB image (60% data, 20% zero, 20% holes)", "GiB/s",
                   True, [arch], ["sha256sum", "cp --sparse=always"],
                   goals=[Goal("sha256sum", 0.7)], group="throughput",
                   cpu_scope="archip: CLI + daemon processes")
    root = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        img = root / "disk.raw"
        ib.make_image(img, size)
        subprocess.run(["cat", str(img)], stdout=subprocess.DEVNULL, check=True)
        for i in range(cfg.repeat):
            log(f"import run {i + 1}/{cfg.repeat}")
            for name, cmd in (("sha256sum", ["sha256sum", str(img)]),
                              ("cp --sparse=always", ["cp", "--sparse=always", str(img),
                                                      str(root / "copy.raw")])):
                c0 = children_cpu()
                dt, _ = ib.timed(cmd)
                add(m, name, size / dt / GiB, (children_cpu() - c0) / (size / GiB))
            (root / "copy.raw").unlink(missing_ok=True)
            inst = root / f"inst{i}"
            ib.timed(ib.archip(inst, "daemon", "start", "--no-nbd", fsync=False))
            try:
                pidf = Instance(inst.resolve()).daemon_pid
                d0, c0 = pidfile_cpu(pidf), children_cpu()
                dt, _ = ib.timed(ib.archip(inst, "import", str(img), "bench", "--json",
                                           "--no-progress", fsync=False))
                cpu = pidfile_cpu(pidf) - d0 + children_cpu() - c0
                add(m, arch, size / dt / GiB, cpu / (size / GiB))
            finally:
                subprocess.run(ib.archip(inst, "daemon", "stop", fsync=False),
                               capture_output=True, check=False, timeout=120)
                shutil.rmtree(inst, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [m]


DRIVERS = {"peers": run_peers, "mapper": run_mapper, "import": run_import, "nbd": run_nbd,
           "gateway": run_gateway, "rados": run_rados}


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"terminated by signal {signum}")  # so every finally: cleans up


def main(argv: list[str] | None = None) -> int:
    """Run one driver and write its metrics as JSON."""
    ap = argparse.ArgumentParser(description="run one benchmark driver")
    ap.add_argument("name", choices=sorted(DRIVERS))
    ap.add_argument("--mode", choices=("quick", "full"), default="quick")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ceph-dir", default="")
    ap.add_argument("--ceph-conf", default="")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    cfg = Cfg(a.mode == "quick", a.repeat, a.ceph_dir, a.ceph_conf)
    metrics = DRIVERS[a.name](cfg)
    Path(a.out).write_text(json.dumps(metrics_to_json(metrics), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
