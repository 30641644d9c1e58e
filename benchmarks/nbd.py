"""NBD benchmark: archipelago's export against nbdkit file, qemu-nbd and a bare Python plugin.

One run, same RAM-backed directory, same clients: sequential 1 MiB write and read
with nbdcopy, random 4 KiB read/write at QD1 and QD32 with fio's nbd engine. Prints
each result, its ratio to `nbdkit file` and the server's CPU µs per operation; the
last line is machine-readable:

    nbd: seq_read_ratio=<x> seq_write_ratio=<y> rand4k_qd32_ratio=<z>

(rand4k_qd32_ratio = mean of the random read and random write QD32 IOPS ratios.)
Usage: .venv/bin/python benchmarks/nbd.py [--size 512M] [--runtime 3] [--threads 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from archipelago.nbd import PLUGIN_PATH
from archipelago.nbd.cfilter import so_path as cfilter_so
from archipelago.nbd.config import parse_size

MiB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")

BYTEARRAY_PLUGIN = '''
import threading, nbdkit
API_VERSION = 2
SIZE = {size}
mem = bytearray(SIZE)
def thread_model(): return nbdkit.THREAD_MODEL_PARALLEL
def open(readonly): return 1
def get_size(h): return SIZE
def block_size(h): return (512, 4096, 32 * 1024 * 1024)
def can_multi_conn(h): return True
def can_flush(h): return True
def flush(h, flags): pass
def pread(h, buf, offset, flags): buf[:] = mem[offset:offset + len(buf)]
def pwrite(h, buf, offset, flags): mem[offset:offset + len(buf)] = buf
'''


@dataclass
class Target:
    """One NBD server under test."""

    name: str
    cmd: list[str]
    sock: Path
    export: str = ""
    proc: subprocess.Popen[bytes] | None = None
    before: list[list[str]] = field(default_factory=list)  # e.g. start the daemon
    after: list[list[str]] = field(default_factory=list)
    results: dict[str, tuple[float, float]] = field(default_factory=dict)  # value, cpu µs/op

    @property
    def uri(self) -> str:
        """The export's URI."""
        return f"nbd+unix:///{self.export}?socket={self.sock}"

    def start(self) -> None:
        """Start the server and wait for its socket."""
        for cmd in self.before:
            subprocess.run(cmd, check=True, timeout=120, stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.sock))
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {' '.join(self.cmd)}") from None
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        """Stop the server."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for cmd in self.after:
            subprocess.run(cmd, timeout=120, stdout=subprocess.DEVNULL)

    def cpu(self) -> float:
        """Server CPU seconds so far (all threads)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK


def seq(t: Target, src: Path, size: int, write: bool) -> tuple[float, float]:
    """nbdcopy 1 MiB requests; returns (MiB/s, server CPU µs per request)."""
    cmd = ["nbdcopy", "--request-size=1048576", "--flush"] if write else \
        ["nbdcopy", "--request-size=1048576", "--no-extents"]
    cmd += [str(src), t.uri] if write else [t.uri, "null:"]
    c0, t0 = t.cpu(), time.monotonic()
    subprocess.run(cmd, check=True, timeout=600)
    dt, dc = time.monotonic() - t0, t.cpu() - c0
    return size / MiB / dt, dc * 1e6 / (size / MiB)


def rand(t: Target, rw: str, qd: int, size: int, runtime: float) -> tuple[float, float, float]:
    """fio nbd engine, 4 KiB; returns (IOPS, mean completion latency µs, CPU µs/op)."""
    cmd = ["fio", "--name=b", "--ioengine=nbd", f"--uri={t.uri}", f"--rw={rw}", "--bs=4k",
           f"--iodepth={qd}", f"--size={size}", f"--runtime={runtime}", "--time_based",
           "--output-format=json", "--randrepeat=0"]
    c0 = t.cpu()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    dc = t.cpu() - c0
    job = json.loads(out[out.index("{"):])["jobs"][0]
    side = job["read" if rw == "randread" else "write"]
    ops = max(side["total_ios"], 1)
    return side["iops"], side["clat_ns"]["mean"] / 1000, dc * 1e6 / ops


def make_targets(d: Path, size: int, threads: int) -> list[Target]:
    """The four servers, each on its own copy of the data in ``d``."""
    raw1, raw2 = d / "file.raw", d / "qemu.raw"
    for raw in (raw1, raw2):
        with open(raw, "wb") as f:
            f.truncate(size)
    plug = d / "bytearray_plugin.py"
    plug.write_text(BYTEARRAY_PLUGIN.format(size=size))
    arch, peer = d / "arch", d / "peer"
    prepare_volume(arch, size)
    prepare_volume(peer, size)
    archip = [sys.executable, "-m", "control", "--data-dir", str(peer), "daemon"]
    t = str(threads)
    return [
        Target("nbdkit-file", ["nbdkit", "-f", "-t", t, "-U", str(d / "f.sock"), "file",
                               f"file={raw1}"], d / "f.sock"),
        Target("qemu-nbd", ["qemu-nbd", "-f", "raw", "-t", "-e", t, "-k", str(d / "q.sock"),
                            "-x", "bench", "--cache=writeback", str(raw2)], d / "q.sock",
               export="bench"),
        Target("nbdkit-python-bytearray", ["nbdkit", "-f", "-t", t, "-U", str(d / "p.sock"),
                                           "python", str(plug)], d / "p.sock"),
        Target("archipelago", ["nbdkit", "-f", "-t", t, "-U", str(d / "a.sock"), "python",
                               str(PLUGIN_PATH), f"dir={arch}", f"venv={sys.prefix}"],
               d / "a.sock", export="bench"),
        # The same export with every request through the mapper (lever off: fastpath.py).
        Target("archipelago-nofastpath", ["nbdkit", "-f", "-t", t, "-U", str(d / "n.sock"),
                                          "python", str(PLUGIN_PATH), f"dir={arch}",
                                          f"venv={sys.prefix}", "fastpath=no"],
               d / "n.sock", export="bench"),
        # Every request over the shared-memory segment to the daemon's mapper peer, as the
        # daemon runs it: with the C filter archip-fast in front of the plugin when it is
        # built (native/nbdkit_filter_archip.c: cached blocks read/written without Python).
        Target("archipelago-peer",
               ["nbdkit", "-f", "-t", t, "-U", str(d / "d.sock"),
                *([f"--filter={cf}"] if (cf := cfilter_so()) else []), "python",
                str(PLUGIN_PATH), f"dir={peer}", f"venv={sys.prefix}", "backend=peer"],
               d / "d.sock", export="bench", before=[archip + ["start", "--no-nbd"]],
               after=[archip + ["stop"]]),
        # Levers off, one at a time: the C filter (the plugin's map cache alone), then
        # nbdkit's map cache (peer_cache.py), then also the mapper peer's own fast path
        # (service/direct_io.py: every block via a blocker peer).
        Target("archipelago-peer-nofilter",
               ["nbdkit", "-f", "-t", t, "-U", str(d / "k.sock"), "python", str(PLUGIN_PATH),
                f"dir={peer}", f"venv={sys.prefix}", "backend=peer"],
               d / "k.sock", export="bench", before=[archip + ["start", "--no-nbd"]],
               after=[archip + ["stop"]]),
        Target("archipelago-peer-nocache",
               ["env", "ARCHIPELAGO_NBD_PEER_CACHE=0", "nbdkit", "-f", "-t", t, "-U",
                str(d / "c.sock"), "python", str(PLUGIN_PATH), f"dir={peer}",
                f"venv={sys.prefix}", "backend=peer"],
               d / "c.sock", export="bench", before=[archip + ["start", "--no-nbd"]],
               after=[archip + ["stop"]]),
        Target("archipelago-peer-nofast",
               ["env", "ARCHIPELAGO_NBD_PEER_CACHE=0", "nbdkit", "-f", "-t", t, "-U",
                str(d / "s.sock"), "python", str(PLUGIN_PATH), f"dir={peer}",
                f"venv={sys.prefix}", "backend=peer"],
               d / "s.sock", export="bench",
               before=[["env", "ARCHIPELAGO_NO_FAST_READ=1", *archip, "start", "--no-nbd"]],
               after=[archip + ["stop"]]),
    ]


def prepare_volume(data_dir: Path, size: int) -> None:
    """Create the benchmark volume on the instance's file blocker."""
    from archipelago.blocker.base import make_owner
    from archipelago.blocker.file import FileBlocker
    from archipelago.mapper import Mapper

    async def run() -> None:
        blocker = FileBlocker(str(data_dir / "blocks"))
        mapper = Mapper(blocker, make_owner("bench"))
        await mapper.create("bench", size)
        await mapper.close()
        await blocker.close()

    data_dir.mkdir(mode=0o700)
    asyncio.run(run())


def main() -> int:
    """Run everything and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="512M")
    ap.add_argument("--runtime", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3, help="sequential runs (median kept)")
    ap.add_argument("--threads", type=int, default=16, help="server worker threads")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--only", help="comma-separated target names")
    args = ap.parse_args()
    for tool in ("nbdkit", "nbdcopy", "fio", "qemu-nbd"):
        if shutil.which(tool) is None:
            print(f"nbd benchmark: {tool} is not installed", file=sys.stderr)
            return 1
    size = parse_size(args.size)
    tests = ["seq_write", "seq_read", "randread_qd1", "randwrite_qd1", "randread_qd32",
             "randwrite_qd32"]
    with tempfile.TemporaryDirectory(prefix="archip-nbd-bench-", dir=args.dir) as tmp:
        d = Path(tmp)
        src = d / "src.raw"
        with open(src, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        targets = make_targets(d, size, args.threads)
        if args.only:
            keep = set(args.only.split(",")) | {"nbdkit-file"}
            targets = [t for t in targets if t.name in keep]
        for t in targets:
            t.start()
            try:
                for k, w in (("seq_write", True), ("seq_read", False)):
                    runs = sorted(seq(t, src, size, write=w) for _ in range(args.repeat))
                    t.results[k] = runs[len(runs) // 2]  # median
                for rw in ("randread", "randwrite"):
                    for qd in (1, 32):
                        iops, lat, cpu = rand(t, rw, qd, size, args.runtime)
                        t.results[f"{rw}_qd{qd}"] = (iops, cpu)
                        t.results[f"{rw}_qd{qd}_lat"] = (lat, 0.0)
            finally:
                t.stop()
            for k in tests:
                v, c = t.results[k]
                unit = "MiB/s" if k.startswith("seq") else "IOPS"
                extra = f" lat {t.results[k + '_lat'][0]:.1f} µs" if "qd1" in k else ""
                print(f"{t.name:26s} {k:15s} {v:10.0f} {unit:5s} cpu {c:7.1f} µs/op{extra}",
                      flush=True)
    base = next(t for t in targets if t.name == "nbdkit-file").results
    print("\nratio to nbdkit-file (higher is better; qd1 latency: lower is better)")
    for t in targets:
        cells = [f"{k}={t.results[k][0] / base[k][0]:.2f}" for k in tests]
        lat = t.results["randread_qd1_lat"][0] / base["randread_qd1_lat"][0]
        print(f"{t.name:26s} " + " ".join(cells) + f" qd1_read_latency_x={lat:.2f}")
    arch = next((t for t in targets if t.name == "archipelago"), None)
    if arch is None:
        return 0
    r = arch.results
    q32 = (r["randread_qd32"][0] / base["randread_qd32"][0]
           + r["randwrite_qd32"][0] / base["randwrite_qd32"][0]) / 2
    print(f"nbd: seq_read_ratio={r['seq_read'][0] / base['seq_read'][0]:.3f} "
          f"seq_write_ratio={r['seq_write'][0] / base['seq_write'][0]:.3f} "
          f"rand4k_qd32_ratio={q32:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
