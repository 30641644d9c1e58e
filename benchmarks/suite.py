"""The benchmark suite: every area benchmark in its own subprocess with a timeout, results
in DIR/results.json, DIR/summary.md and DIR/*.png.

A failing or hanging benchmark is recorded as failed (its log stays in DIR/logs/) and the
suite goes on. The RADOS benchmark gets a throwaway single-host Ceph cluster started here
with testbed/ceph_cluster.py and always stopped here (plus a --watch-pid watchdog should
this process itself be killed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import summary_md
from testbed.ceph import cluster_command

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Spec:
    """One benchmark of the suite and its time budget (seconds) per mode."""

    name: str
    quick_timeout: float
    full_timeout: float


SPECS = [Spec("peers", 150, 900), Spec("mapper", 150, 900), Spec("import", 120, 900),
         Spec("nbd", 420, 2400), Spec("gateway", 120, 900), Spec("rados", 240, 1800)]
NAMES = [s.name for s in SPECS]


def _cmd_version(cmd: list[str]) -> str:
    """First line of a tool's version output ('absent' when not installed)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "absent"


def machine_facts() -> dict[str, Any]:
    """CPU, cores, kernel, load and tool versions of this host."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        mem_gib = round(int(mem) / (1 << 20), 1)
    except (OSError, IndexError, ValueError):
        mem_gib = 0.0
    return {
        "cpu_model": model, "cores": os.cpu_count(), "mem_gib": mem_gib,
        "kernel": platform.release(), "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": {
            "python": platform.python_version(),
            "nbdkit": _cmd_version(["nbdkit", "--version"]),
            "qemu": _cmd_version(["qemu-img", "--version"]),
            "ceph": _cmd_version(["ceph", "--version"]),
            "fio": _cmd_version(["fio", "--version"]),
            "libnbd": _cmd_version(["nbdcopy", "--version"]),
        },
    }


def git_commit() -> str:
    """HEAD of the checkout, with '+dirty' when benchmarks or sources have local changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "archipelago", "benchmarks", "native", "pithos_gw", "control"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _kill_group(p: subprocess.Popen[bytes]) -> None:
    """SIGTERM the benchmark's process group (its drivers clean up), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_one(spec: Spec, mode: str, repeat: int, out: Path,
            driver: list[str] | None = None) -> dict[str, Any]:
    """Run one benchmark driver in a subprocess; returns its status, time and metrics.

    ``driver`` replaces the driver command line (tests); it gets ``--out FILE`` appended.
    """
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    timeout = spec.quick_timeout if mode == "quick" else spec.full_timeout
    ceph_dir = ""
    res: dict[str, Any] = {"status": "failed", "seconds": 0.0, "error": "", "metrics": []}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp, \
            open(logs / f"{spec.name}.log", "wb") as logf:
        cmd = driver or [sys.executable, "-m", "benchmarks.drivers", spec.name, "--mode", mode,
                         "--repeat", str(repeat)]
        cmd = [*cmd, "--out", str(Path(tmp) / "metrics.json")]
        try:
            if spec.name == "rados":
                ceph_dir = tempfile.mkdtemp(prefix="bench-ceph-")
                up = subprocess.run(cluster_command("up", ceph_dir, "--size-mb", "4096",
                                                     "--watch-pid", str(os.getpid())),
                                    capture_output=True, text=True, timeout=180)
                logf.write(up.stdout.encode() + up.stderr.encode())
                if up.returncode != 0:
                    raise RuntimeError(f"ceph_cluster.py up failed: {up.stderr.strip()[-300:]}")
                cmd += ["--ceph-dir", ceph_dir, "--ceph-conf", up.stdout.strip().splitlines()[-1]]
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            try:
                rc = p.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(p)
                res["status"] = "timeout"
                res["error"] = f"no result within {timeout:.0f} s"
                return res
            if rc != 0:
                res["error"] = _tail(logs / f"{spec.name}.log")
                return res
            res["metrics"] = json.loads((Path(tmp) / "metrics.json").read_text())
            res["status"] = "ok"
        except Exception as e:  # noqa: BLE001 -- one benchmark never takes the suite down
            res["error"] = f"{type(e).__name__}: {e}"
        finally:
            res["seconds"] = round(time.monotonic() - t0, 1)
            if ceph_dir:
                subprocess.run(cluster_command("down", ceph_dir),
                               capture_output=True, timeout=120, check=False)
                try:
                    os.rmdir(ceph_dir)
                except OSError:
                    pass
    return res


def _tail(path: Path, n: int = 6) -> str:
    """Last lines of a log, for the summary of a failed benchmark."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def run_suite(mode: str, out: Path, only: list[str] | None = None,
              repeat: int = 3) -> dict[str, Any]:
    """Run the chosen benchmarks; write results.json, summary.md and the plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "schema": 1, "mode": mode, "repeat": repeat,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git_commit(), "machine": machine_facts(), "benchmarks": {},
    }
    t0 = time.monotonic()
    for spec in SPECS:
        if only and spec.name not in only:
            continue
        print(f"benchmarks: {spec.name} ...", flush=True)
        r = run_one(spec, mode, repeat, out)
        results["benchmarks"][spec.name] = r
        print(f"benchmarks: {spec.name} {r['status']} in {r['seconds']:.0f} s"
              + (f": {r['error'][:200]}" if r["status"] != "ok" else ""), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))  # partial results too
    results["total_seconds"] = round(time.monotonic() - t0, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    try:
        (out / "summary.md").write_text(summary_md(results))
    except Exception as e:  # noqa: BLE001 -- results.json is written: keep it, say what failed
        (out / "summary.md").write_text(f"summary failed: {type(e).__name__}: {e}\n")
    try:
        from benchmarks.plots import plot_all

        results["plots"] = plot_all(results, out)
        (out / "results.json").write_text(json.dumps(results, indent=1))
    except ImportError as e:
        print(f"benchmarks: no plots ({e}); install python3-matplotlib", file=sys.stderr)
    except Exception as e:  # noqa: BLE001
        print(f"benchmarks: plotting failed: {type(e).__name__}: {e}", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line of `python -m benchmarks`."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks",
                                 description="Run every benchmark against its native peers.")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", const="quick", dest="mode",
                   help="small sizes, about 10 minutes on 2 cores (default)")
    g.add_argument("--full", action="store_const", const="full", dest="mode",
                   help="the sizes of the issues (2 GiB import, 1 GiB NBD, ...)")
    ap.add_argument("--out", default="bench-out", help="result directory (default bench-out/)")
    ap.add_argument("--only", help=f"comma-separated subset of: {','.join(NAMES)}")
    ap.add_argument("--repeat", type=int, default=3, help="runs per path (default 3)")
    a = ap.parse_args(argv)
    only = [n.strip() for n in a.only.split(",")] if a.only else None
    bad = [n for n in only or [] if n not in NAMES]
    if bad:
        print(f"benchmarks: unknown benchmark(s) {','.join(bad)}; choose from "
              f"{','.join(NAMES)}", file=sys.stderr)
        return 2
    if a.repeat < 1:
        print("benchmarks: --repeat must be at least 1", file=sys.stderr)
        return 2
    out = Path(a.out)
    res = run_suite(a.mode or "quick", out, only, a.repeat)
    print((out / "summary.md").read_text())
    failed = [n for n, b in res["benchmarks"].items() if b["status"] != "ok"]
    print(f"benchmarks: {len(res['benchmarks']) - len(failed)} ok, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else "")
          + f" in {res['total_seconds']:.0f} s; results in {out}/")
    return 1 if failed else 0
