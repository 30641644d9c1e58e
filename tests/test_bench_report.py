"""Report, regression check and plots of the benchmark suite, on synthetic results only."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import regress
from benchmarks.measure import proc_cpu, tree_cpu
from benchmarks.report import Goal, Metric, metrics_to_json, ratio, ratios, rows, summary_md


def metric(name: str = "seq read", higher: bool = True, arch: float = 80.0,
           peer: float = 100.0, goal: Goal | None = None, **kw: Any) -> Metric:
    """A two-path metric with three runs each around the given medians."""
    return Metric("nbd", name, "MiB/s" if higher else "ms", higher, ["archipelago"],
                  ["nbdkit-file"], {"archipelago": [arch * 0.9, arch, arch * 1.1],
                                    "nbdkit-file": [peer, peer * 1.2, peer * 0.8]},
                  goals=[goal] if goal else [], **kw)


def results(*ms: Metric, status: str = "ok") -> dict[str, Any]:
    """A results.json document holding the metrics."""
    return {"mode": "quick", "repeat": 3, "machine": {"cpu_model": "synthetic", "cores": 2},
            "benchmarks": {"nbd": {"status": status, "seconds": 1.0, "error": "boom",
                                   "metrics": metrics_to_json(list(ms))}}}


def test_ratio_is_oriented_so_higher_is_better() -> None:
    assert ratio(metric(arch=80, peer=100), "archipelago", "nbdkit-file") == pytest.approx(0.8)
    # for times a smaller archipelago value is better: peer / archipelago
    t = metric(higher=False, arch=50, peer=100)
    assert ratio(t, "archipelago", "nbdkit-file") == pytest.approx(2.0)
    assert ratio(t, "archipelago", "absent") is None


def test_verdict_says_behind_with_the_ratio_and_goal_outcome() -> None:
    (r,) = rows(metric(arch=40, peer=100, goal=Goal("nbdkit-file", 0.8)))
    assert "BEHIND nbdkit-file: 0.40×" in r["verdict"]
    assert "goal MISSED" in r["verdict"]
    assert r["goal"] == "≥ 0.8× nbdkit-file"
    (r,) = rows(metric(arch=90, peer=100, goal=Goal("nbdkit-file", 0.8)))
    assert "BEHIND" in r["verdict"] and "goal met" in r["verdict"]
    (r,) = rows(metric(arch=200, peer=100))
    assert r["verdict"] == "ahead of nbdkit-file (2.00×)"


def test_absolute_goal_for_lower_is_better() -> None:
    m = metric(name="clone 1 TiB", higher=False, arch=50, peer=10, goal=Goal(max_value=100))
    (r,) = rows(m)
    assert "goal met" in r["verdict"] and "BEHIND" in r["verdict"]
    m.samples["archipelago"] = [150.0, 160.0, 170.0]
    assert "goal MISSED" in rows(m)[0]["verdict"]


def test_metric_without_peer_has_one_row() -> None:
    m = Metric("gateway", "PUT", "MiB/s", True, ["gw"], [], {"gw": [1.0, 2.0, 3.0]})
    (r,) = rows(m)
    assert r["peer"] is None and r["ratio"] is None and r["verdict"] == "no peer measured"


def test_summary_lists_behind_rows_failures_cpu_and_spreads() -> None:
    m = metric(arch=40, peer=100, goal=Goal("nbdkit-file", 0.8))
    m.cpu = {"archipelago": [1.5, 2.0, 2.5]}
    doc = results(m)
    doc["benchmarks"]["rados"] = {"status": "timeout", "seconds": 240.0,
                                  "error": "no result within 240 s", "metrics": []}
    md = summary_md(doc)
    assert "| nbd | seq read (MiB/s) | archipelago | 40.0 [36.0–44.0] | nbdkit-file |" in md
    assert "- nbd — archipelago vs nbdkit-file: seq read 0.40×" in md
    assert "| nbd | archipelago |" in md and "| seq read | 2.00 |" in md
    assert "**rados**: timeout after 240 s: no result within 240 s" in md


def test_metric_roundtrips_through_json() -> None:
    m = metric(goal=Goal("nbdkit-file", 0.5), group="iops_qd", family="rand read", x=32)
    back = Metric.from_dict(json.loads(json.dumps(metrics_to_json([m])))[0])
    assert back == m


def test_regress_flags_drops_beyond_threshold_only() -> None:
    old = results(metric("a", arch=100, peer=100), metric("b", arch=100, peer=100))
    new = results(metric("a", arch=86, peer=100), metric("b", arch=84, peer=100))
    bad, changes, missing = regress.compare(old, new)
    assert [c.key[1] for c in bad] == ["b"]
    assert len(changes) == 2 and not missing
    # a failed benchmark in the new run: its ratios are missing, not regressions
    bad, _, missing = regress.compare(old, results(metric("a"), status="failed"))
    assert not bad and len(missing) == 2
    assert set(ratios(old)) == {("nbd", "a", "archipelago", "nbdkit-file"),
                                ("nbd", "b", "archipelago", "nbdkit-file")}


def test_regress_command_exit_status(tmp_path: Path) -> None:
    old, new, same = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "same.json"
    old.write_text(json.dumps(results(metric(arch=100, peer=100))))
    new.write_text(json.dumps(results(metric(arch=50, peer=100))))
    same.write_text(json.dumps(results(metric(arch=95, peer=100))))
    cmd = [sys.executable, "-m", "benchmarks.regress"]
    p = subprocess.run([*cmd, str(old), str(new)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "REGRESSION" in p.stdout
    p = subprocess.run([*cmd, str(old), str(same)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "0 of 1 ratios dropped" in p.stdout
    assert regress.main([str(old), str(tmp_path / "absent.json")]) == 2


def test_plots_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks.plots import plot_all

    ms = [metric(group="throughput")]
    for q in (1, 8, 32):
        ms.append(metric(f"rand read QD{q}", arch=1000 * q, peer=3000 * q, group="iops_qd",
                         family="rand read", x=q))
    for gib in (1, 100, 1024):
        ms.append(metric(f"clone {gib}", higher=False, arch=5 + gib / 100, peer=20,
                         group="clone_size", family="clone", x=gib << 30))
    files = plot_all(results(*ms), tmp_path)
    assert sorted(files) == ["clone_time_vs_size.png", "iops_vs_queue_depth.png",
                             "throughput_nbd.png"]
    for f in files:
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cpu_accounting_counts_a_busy_child() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\n"
                          "while time.process_time() - t < 0.3: pass\ninput()"],
                         stdin=subprocess.PIPE)
    try:
        deadline = 200
        while proc_cpu(p.pid) < 0.25 and deadline:
            subprocess.run(["sleep", "0.05"])
            deadline -= 1
        assert proc_cpu(p.pid) >= 0.25
        assert tree_cpu(p.pid) >= proc_cpu(p.pid)
    finally:
        p.kill()
        p.wait()
    assert proc_cpu(p.pid) == 0.0


def _driver(code: str) -> list[str]:
    """A stand-in driver: python code that receives `--out FILE` in sys.argv."""
    return [sys.executable, "-c", code]


def test_suite_records_failure_and_timeout_and_kills_the_group(tmp_path: Path) -> None:
    from benchmarks.suite import Spec, run_one

    r = run_one(Spec("x", 60, 60), "quick", 1, tmp_path,
                _driver("import sys; print('driver broke'); sys.exit(3)"))
    assert r["status"] == "failed" and "driver broke" in r["error"]
    assert (tmp_path / "logs" / "x.log").exists()
    # the driver's child must die with it (process group), not linger
    pidf = tmp_path / "child.pid"
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen(['sleep', '300'])\n"
            f"open({str(pidf)!r}, 'w').write(str(p.pid))\n"
            "time.sleep(300)\n")
    r = run_one(Spec("slow", 2, 2), "quick", 1, tmp_path, _driver(code))
    assert r["status"] == "timeout"
    child = int(pidf.read_text())
    # SIGKILL is delivered asynchronously: wait (bounded) for the child's exit on a pidfd,
    # which becomes readable when the process terminates (a zombie counts as exited)
    try:
        fd = os.pidfd_open(child)
    except ProcessLookupError:
        return  # gone and reaped already
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        assert poller.poll(30_000), f"the driver's child {child} outlived its process group"
    finally:
        os.close(fd)


def test_suite_reads_the_driver_metrics(tmp_path: Path) -> None:
    from benchmarks.suite import Spec, run_one

    doc = json.dumps(metrics_to_json([metric()]))
    code = f"import sys; open(sys.argv[sys.argv.index('--out') + 1], 'w').write({doc!r})"
    r = run_one(Spec("ok", 60, 60), "quick", 1, tmp_path, _driver(code))
    assert r["status"] == "ok"
    assert Metric.from_dict(r["metrics"][0]) == metric()


def test_regress_reports_benchmarks_missing_from_the_new_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(results(metric("a"), metric("b"))))
    new.write_text(json.dumps(results(metric("a"), status="timeout")))
    assert regress.main([str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "nbd: 2 ratios (timeout in the new run)" in out and ", 2 missing" in out


def test_goals_bind_the_path_they_name_and_old_results_still_load() -> None:
    m = Metric("peers", "msg/s", "msg/s", True, ["asyncio", "C"], ["socket"],
               {"asyncio": [2.0], "C": [6.0], "socket": [1.0]},
               goals=[Goal("socket", 3.0, arch="asyncio"), Goal("socket", 5.0, arch="C")])
    by_arch = {r["arch"]: r for r in rows(m)}
    assert by_arch["asyncio"]["goal"] == "≥ 3× socket"
    assert "goal MISSED" in by_arch["asyncio"]["verdict"]
    assert by_arch["C"]["goal"] == "≥ 5× socket" and "goal met" in by_arch["C"]["verdict"]
    legacy = {**metrics_to_json([metric()])[0], "goal": {"peer": "nbdkit-file", "min_ratio": 0.8}}
    del legacy["goals"]
    assert Metric.from_dict(legacy).goals == [Goal("nbdkit-file", 0.8)]
