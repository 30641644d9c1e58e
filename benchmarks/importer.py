"""Import benchmark: `archip import` of a 2 GiB raw image with mixed data, zero-filled and
hole blocks, against `sha256sum` of the same file and `cp --sparse=always`, in one run.

Run: ``python -m benchmarks.importer [--gib G] [--dir DIR] [--fsync]``. The image is made
once (page cache warm for every contender); each import goes into a fresh daemon
instance (file blocker). The last line is ``import: ratio_vs_sha256sum=<x>``
(throughput of the first import, into an empty store, over sha256sum's).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024
BS = 4 * MiB
ARCHIP = [sys.executable, "-m", "control"]


def make_image(path: Path, size: int, seed: int = 1) -> dict[str, int]:
    """60% random data blocks, 20% zero-filled blocks, 20% holes (in a fixed shuffle)."""
    r = random.Random(seed)
    n = size // BS
    kinds = ["data"] * (n * 6 // 10) + ["zero"] * (n * 2 // 10)
    kinds += ["hole"] * (n - len(kinds))
    r.shuffle(kinds)
    with open(path, "wb") as f:
        f.truncate(size)
        for i, k in enumerate(kinds):
            if k == "data":
                os.pwrite(f.fileno(), os.urandom(BS), i * BS)
            elif k == "zero":
                os.pwrite(f.fileno(), bytes(BS), i * BS)
    return {k: kinds.count(k) for k in ("data", "zero", "hole")}


def timed(cmd: list[str], **kw: object) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall time of one command (which must succeed)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {p.stderr.strip()}")
    return dt, p


def archip(data_dir: Path, *args: str, fsync: bool) -> list[str]:
    """The archip command line for one instance."""
    return [*ARCHIP, "--data-dir", str(data_dir), "-o",
            f"blocker.file.fsync={'true' if fsync else 'false'}", *args]


def gib_s(nbytes: int, seconds: float) -> str:
    """Throughput text."""
    return f"{nbytes / seconds / (1 << 30):.2f} GiB/s"


def main() -> None:
    """Run the comparison and print one line per contender."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gib", type=float, default=2.0, help="image size in GiB")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a tmp dir)")
    ap.add_argument("--fsync", action="store_true", help="file blocker fsync=true (default "
                    "false: neither sha256sum nor cp syncs)")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="archip-bench-import-", dir=a.dir))
    size = int(a.gib * (1 << 30)) // BS * BS
    try:
        img = root / "disk.raw"
        kinds = make_image(img, size)
        print(f"image: {size / (1 << 30):.2f} GiB, {kinds['data']} data, {kinds['zero']} "
              f"zero-filled, {kinds['hole']} hole blocks of 4 MiB ({root})")
        subprocess.run(["cat", str(img)], stdout=subprocess.DEVNULL, check=True)  # warm cache
        t_sha, _ = timed(["sha256sum", str(img)])
        print(f"sha256sum:          {t_sha:6.2f} s  {gib_s(size, t_sha)}")
        t_cp, _ = timed(["cp", "--sparse=always", str(img), str(root / "copy.raw")])
        os.unlink(root / "copy.raw")
        print(f"cp --sparse=always: {t_cp:6.2f} s  {gib_s(size, t_cp)}")
        inst = root / "inst"
        timed(archip(inst, "daemon", "start", "--no-nbd", fsync=a.fsync))
        try:
            t_imp, p = timed(archip(inst, "import", str(img), "bench", "--json",
                                    "--no-progress", fsync=a.fsync))
            st = json.loads(p.stdout)
            print(f"archip import:      {t_imp:6.2f} s  {gib_s(size, t_imp)}  "
                  f"({st['new_blocks']} blocks stored, in-process {st['seconds']:.2f} s, "
                  f"fsync={'on' if a.fsync else 'off'})")
            t_dup, p = timed(archip(inst, "import", str(img), "bench2", "--json",
                                    "--no-progress", fsync=a.fsync))
            print(f"archip import again:{t_dup:6.2f} s  {gib_s(size, t_dup)}  "
                  f"({json.loads(p.stdout)['new_blocks']} new blocks: all deduplicated)")
            out = root / "export.raw"
            t_exp, _ = timed(archip(inst, "export", "bench", str(out), "--json",
                                    "--no-progress", fsync=a.fsync))
            print(f"archip export:      {t_exp:6.2f} s  {gib_s(size, t_exp)}  (sparse)")
            same = subprocess.run(["cmp", str(img), str(out)], check=False).returncode == 0
            print(f"export identical to the image: {same}")
        finally:
            subprocess.run(archip(inst, "daemon", "stop", fsync=a.fsync), capture_output=True,
                           check=False)
        print(f"import vs cp --sparse=always: ratio_vs_cp={t_cp / t_imp:.3f}")
        print(f"import: ratio_vs_sha256sum={t_sha / t_imp:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
