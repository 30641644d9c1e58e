"""Benchmark results: the metric record, ratios to peers, verdicts and the Markdown summary.

Every number is kept per run (``samples[path]`` is a list, one value per repetition);
the summary shows min/median/max and the ratio of medians. A ratio is oriented so that
> 1 always means archipelago is better (value ratio for throughput, inverse for times).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Goal:
    """A target from the issues: a ratio to one peer, or an absolute bound on the value."""

    peer: str | None = None
    min_ratio: float | None = None  # oriented ratio (>1 better) against ``peer``
    min_value: float | None = None  # for higher-is-better metrics
    max_value: float | None = None  # for lower-is-better metrics
    arch: str | None = None  # the archipelago path it binds (None: every path)

    def applies(self, arch: str, peer: str | None) -> bool:
        """Whether this goal is judged on the row of ``arch`` against ``peer``."""
        return (self.peer is None or self.peer == peer) and self.arch in (None, arch)

    def text(self, unit: str) -> str:
        """Human form of the goal."""
        if self.min_ratio is not None:
            return f"≥ {self.min_ratio:g}× {self.peer}"
        if self.min_value is not None:
            return f"≥ {self.min_value:g} {unit}"
        if self.max_value is not None:
            return f"≤ {self.max_value:g} {unit}"
        return ""


@dataclass
class Metric:
    """One measured quantity of one benchmark, for every path that ran it."""

    bench: str
    name: str
    unit: str
    higher_better: bool
    arch: list[str]  # archipelago paths
    peers: list[str]  # native peers they are compared with
    samples: dict[str, list[float]]  # path -> one value per run (other keys: references)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # path -> CPU s per GiB, per run
    goals: list[Goal] = field(default_factory=list)
    group: str = ""  # plot kind: "throughput", "iops_qd", "clone_size" or ""
    family: str = ""  # series label inside a plot group (e.g. "rand read")
    x: float | None = None  # the plot's x (queue depth, volume size in bytes)
    internal: bool = False  # the "peers" are other archipelago modes, not native tools
    cpu_scope: str = ""  # what the CPU figure covers, when more than this metric's transfer

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metric:
        """Inverse of dataclasses.asdict."""
        d = dict(d)
        legacy = d.pop("goal", None)  # results.json written before goals became a list
        goals = d.pop("goals", None) or ([legacy] if legacy else [])
        return cls(goals=[Goal(**g) for g in goals], **d)


def median(xs: list[float]) -> float:
    """Median (0.0 for no samples)."""
    return statistics.median(xs) if xs else 0.0


def ratio(m: Metric, arch: str, peer: str) -> float | None:
    """Oriented ratio of medians: > 1 means the archipelago path is better than the peer."""
    a, p = median(m.samples.get(arch, [])), median(m.samples.get(peer, []))
    if a <= 0 or p <= 0:
        return None
    return a / p if m.higher_better else p / a


def fmt(v: float) -> str:
    """Compact number: 3 significant digits, thousands separated."""
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:#.3g}"


def spread(xs: list[float]) -> str:
    """median [min–max] of the runs."""
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt(xs[0])
    return f"{fmt(median(xs))} [{fmt(min(xs))}–{fmt(max(xs))}]"


def verdict(m: Metric, arch: str, peer: str | None) -> str:
    """Honest one-phrase verdict for one row: ahead/behind the peer and the goal's outcome."""
    parts: list[str] = []
    r = ratio(m, arch, peer) if peer else None
    if r is not None and m.internal:
        parts.append(f"{r:.2f}× of {peer} (internal comparison, not a native peer)")
    elif r is not None:
        if r >= 1.05:
            parts.append(f"ahead of {peer} ({r:.2f}×)")
        elif r >= 0.95:
            parts.append(f"on par with {peer} ({r:.2f}×)")
        else:
            parts.append(f"BEHIND {peer}: {r:.2f}×")
    a = median(m.samples.get(arch, []))
    for g in (g for g in m.goals if g.applies(arch, peer)):
        ok: bool | None = None
        if g.min_ratio is not None and r is not None:
            ok = r >= g.min_ratio
        if g.min_value is not None and a > 0:
            ok = a >= g.min_value
        if g.max_value is not None and a > 0:
            ok = a <= g.max_value
        if ok is not None:
            parts.append("goal met" if ok else "goal MISSED")
    return "; ".join(parts) if parts else "no peer measured"


def rows(m: Metric) -> list[dict[str, Any]]:
    """The summary rows of one metric: every archipelago path against every peer."""
    out = []
    for a in m.arch:
        peers = m.peers or [None]
        for p in peers:
            goals = [g.text(m.unit) for g in m.goals if g.applies(a, p)]
            out.append({
                "bench": m.bench, "metric": m.name, "unit": m.unit, "arch": a, "peer": p,
                "arch_runs": m.samples.get(a, []), "peer_runs": m.samples.get(p, []) if p else [],
                "ratio": ratio(m, a, p) if p else None,
                "goal": "; ".join(goals),
                "verdict": verdict(m, a, p),
            })
    return out


def summary_md(results: dict[str, Any]) -> str:
    """The Markdown summary of one results.json document."""
    mach = results.get("machine", {})
    lines = [
        f"# Benchmark summary ({results.get('mode', '?')} mode)",
        "",
        f"- when: {results.get('timestamp', '?')}, commit `{results.get('git_commit', '?')}`",
        f"- machine: {mach.get('cpu_model', '?')}, {mach.get('cores', '?')} cores, kernel "
        f"{mach.get('kernel', '?')}, load average at start {mach.get('loadavg', '?')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in mach.get("versions", {}).items()),
        f"- runs per path: {results.get('repeat', '?')}, interleaved with the peers; values are "
        "median [min–max]; ratio = archipelago / peer on medians, inverted for times and "
        "latencies, so **ratio > 1 means archipelago is better, < 1 means it is behind**.",
    ]
    header = ["| benchmark | metric | archipelago path | archipelago | peer | peer value | ratio "
              "| goal | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    behind: dict[tuple[str, str, str], list[str]] = {}
    cpu: dict[str, list[Metric]] = {}
    failed: list[str] = []
    for name, b in results.get("benchmarks", {}).items():
        lines += ["", f"## {name} ({b.get('status')}, {b.get('seconds', 0):.0f} s)", "", *header]
        if b.get("status") != "ok":
            failed.append(f"- **{name}**: {b.get('status')} after {b.get('seconds', 0):.0f} s: "
                          f"{b.get('error', '').strip()[:300]}")
            lines.append(f"| {name} | — | — | — | — | — | — | — | **{b.get('status')}** |")
            continue
        for md in b.get("metrics", []):
            m = Metric.from_dict(md)
            for r in rows(m):
                rt = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—"
                lines.append(
                    f"| {name} | {m.name} ({m.unit}) | {r['arch']} | {spread(r['arch_runs'])} "
                    f"| {r['peer'] or '—'} | {spread(r['peer_runs'])} | {rt} | {r['goal']} "
                    f"| {r['verdict']} |")
                if r["ratio"] is not None and r["ratio"] < 0.95 and not m.internal:
                    behind.setdefault((name, r["arch"], r["peer"]), []).append(
                        f"{m.name} {r['ratio']:.2f}×")
            if any(m.cpu.values()):
                cpu.setdefault(name, []).append(m)
    lines += ["", "## Where archipelago is behind (ratio < 0.95)", ""]
    lines += [f"- {b} — {a} vs {p}: " + "; ".join(items)
              for (b, a, p), items in behind.items()] or ["- nowhere in this run"]
    if cpu:
        lines += ["", "## CPU seconds per GiB moved (lower is better; median of the runs)"]
        for name, ms in cpu.items():
            paths = list(dict.fromkeys(p for m in ms for p in m.cpu if m.cpu[p]))
            lines += ["", f"| {name} | " + " | ".join(paths) + " |",
                      "|---" * (len(paths) + 1) + "|"]
            for m in ms:
                label = f"{m.name} ({m.cpu_scope})" if m.cpu_scope else m.name
                lines.append(f"| {label} | " + " | ".join(
                    fmt(median(m.cpu[p])) if m.cpu.get(p) else "—" for p in paths) + " |")
    if failed:
        lines += ["", "## Failed benchmarks", "", *failed]
    return "\n".join(lines) + "\n"


def metrics_to_json(metrics: list[Metric]) -> list[dict[str, Any]]:
    """JSON-ready form of metrics."""
    return [asdict(m) for m in metrics]


def load(path: str | Path) -> dict[str, Any]:
    """Read one results.json."""
    return json.loads(Path(path).read_text())


def ratios(results: dict[str, Any]) -> dict[tuple[str, str, str, str], float]:
    """Every (benchmark, metric, archipelago path, peer) -> oriented ratio of one run."""
    out: dict[tuple[str, str, str, str], float] = {}
    for name, b in results.get("benchmarks", {}).items():
        if b.get("status") != "ok":
            continue
        for md in b.get("metrics", []):
            m = Metric.from_dict(md)
            for a in m.arch:
                for p in m.peers:
                    r = ratio(m, a, p)
                    if r is not None:
                        out[(name, m.name, a, p)] = r
    return out
