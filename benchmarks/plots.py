"""PNG plots of a results.json (matplotlib, Agg backend): throughput bars per peer,
IOPS vs queue depth, clone time vs volume size (log axes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from benchmarks.report import Metric, fmt, median  # noqa: E402

ARCH_COLOR, PEER_COLOR, REF_COLOR = "#1f6fb4", "#e07b20", "#9a9a9a"
# Line plots: blues/greens for archipelago, warm colours for peers, greys for references.
PALETTE = {"arch": ["#1f6fb4", "#17becf", "#2ca02c", "#6a3d9a"],
           "peer": ["#e07b20", "#d62728", "#8c564b", "#e377c2"],
           "ref": ["#7f7f7f", "#bcbd22"]}


def _metrics(results: dict[str, Any], group: str) -> list[Metric]:
    """Metrics of every successful benchmark in one plot group."""
    out = []
    for b in results.get("benchmarks", {}).values():
        if b.get("status") == "ok":
            out += [m for m in map(Metric.from_dict, b.get("metrics", [])) if m.group == group]
    return out


def _color(m: Metric, path: str) -> str:
    return ARCH_COLOR if path in m.arch else PEER_COLOR if path in m.peers else REF_COLOR


def _err(xs: list[float]) -> tuple[float, float]:
    """Distances from the median to min and max (for error bars)."""
    mid = median(xs)
    return mid - min(xs), max(xs) - mid


def plot_throughput(results: dict[str, Any], out: Path) -> list[Path]:
    """One PNG per benchmark: horizontal bars (median, min–max whiskers) per path."""
    by_bench: dict[str, list[Metric]] = {}
    for m in _metrics(results, "throughput"):
        by_bench.setdefault(m.bench, []).append(m)
    files = []
    for bench, ms in by_bench.items():
        fig, axes = plt.subplots(len(ms), 1, figsize=(9, 1.2 + 0.55 * sum(
            len(m.samples) for m in ms) + 0.6 * len(ms)), squeeze=False)
        for ax, m in zip(axes[:, 0], ms, strict=True):
            paths = [p for p in m.arch + m.peers if m.samples.get(p)]
            paths += [p for p in m.samples if p not in paths and m.samples[p]]
            meds = [median(m.samples[p]) for p in paths]
            errs = list(zip(*(_err(m.samples[p]) for p in paths), strict=True))
            y = range(len(paths))
            ax.barh(y, meds, xerr=errs, color=[_color(m, p) for p in paths], capsize=3)
            tops = [max(m.samples[p]) for p in paths]
            ax.set_yticks(list(y), paths)
            ax.invert_yaxis()
            ax.set_xlabel(f"{m.unit} (median of {max(len(v) for v in m.samples.values())} runs, "
                          "whiskers min–max; higher is better)")
            ax.set_title(m.name, fontsize=10, loc="left")
            for yi, v, top in zip(y, meds, tops, strict=True):  # right of the whisker
                ax.text(top, yi, f"  {fmt(v)}", va="center", fontsize=8)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))
            ax.set_xlim(0, max(tops) * 1.25 if tops and max(tops) > 0 else 1)
        refs = any(_color(m, p) == REF_COLOR for m in ms for p in m.samples if m.samples[p])
        fig.suptitle(f"{bench}: archipelago (blue) vs native peers (orange)"
                     + (", references (grey)" if refs else ""), fontsize=11)
        fig.tight_layout()
        f = out / f"throughput_{bench}.png"
        fig.savefig(f, dpi=90)
        plt.close(fig)
        files.append(f)
    return files


def _series_plot(ms: list[Metric], ax: Any, xscale: float) -> None:
    """One line per (family, path) through the metrics' x values."""
    series: dict[tuple[str, str], list[tuple[float, float, list[float]]]] = {}
    for m in ms:
        for p, xs in m.samples.items():
            if xs and m.x is not None:
                series.setdefault((m.family, p), []).append((m.x / xscale, median(xs), xs))
    used = {"arch": 0, "peer": 0, "ref": 0}
    for (fam, p), pts in sorted(series.items()):
        pts.sort()
        arch = any(p in m.arch for m in ms)
        role = "arch" if arch else "peer" if any(p in m.peers for m in ms) else "ref"
        color = PALETTE[role][used[role] % len(PALETTE[role])]
        used[role] += 1
        ax.errorbar([x for x, _, _ in pts], [y for _, y, _ in pts],
                    yerr=list(zip(*(_err(xs) for _, _, xs in pts), strict=True)),
                    marker="o", capsize=3, linestyle="-" if arch else "--", color=color,
                    label=f"{fam}: {p}" if fam else p)


def plot_iops_qd(results: dict[str, Any], out: Path) -> list[Path]:
    """IOPS vs queue depth, one panel per family (rand read, rand write), log2 x axis."""
    ms = _metrics(results, "iops_qd")
    fams = sorted({m.family for m in ms})
    if not fams:
        return []
    fig, axes = plt.subplots(1, len(fams), figsize=(6.5 * len(fams), 5), squeeze=False)
    for ax, fam in zip(axes[0], fams, strict=True):
        fm = [m for m in ms if m.family == fam]
        _series_plot([Metric.from_dict({**m.__dict__, "family": "",
                                        "goals": []}) for m in fm], ax, 1)
        ax.set_xscale("log", base=2)
        qds = sorted({m.x for m in fm if m.x is not None})
        ax.set_xticks(qds, [f"{q:g}" for q in qds])
        ax.set_yscale("log")
        ax.set_xlabel("queue depth (4 KiB requests in flight, log2)")
        ax.set_ylabel("IOPS, 4 KiB requests (log; higher is better)")
        ax.set_title(f"NBD {fam} 4 KiB (fio nbd engine); solid = archipelago, dashed = peers",
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    f = out / "iops_vs_queue_depth.png"
    fig.savefig(f, dpi=90)
    plt.close(fig)
    return [f]


def plot_clone_size(results: dict[str, Any], out: Path) -> list[Path]:
    """Snapshot/clone time vs volume size, log-log."""
    ms = _metrics(results, "clone_size")
    if not ms:
        return []
    fig, ax = plt.subplots(figsize=(11, 5.5))
    _series_plot(ms, ax, 1 << 30)
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = sorted({m.x / (1 << 30) for m in ms if m.x is not None})
    ax.set_xticks(sizes, [f"{s / 1024:g} TiB" if s >= 1024 else f"{s:g} GiB" for s in sizes])
    ax.set_xlabel("volume size (log; sparse volumes, every map chunk stored)")
    ax.set_ylabel("time (ms, log; lower is better)")
    ax.set_title("Snapshot / clone time vs volume size; solid = archipelago, dashed = peers",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    f = out / "clone_time_vs_size.png"
    fig.savefig(f, dpi=90)
    plt.close(fig)
    return [f]


def plot_all(results: dict[str, Any], out: Path) -> list[str]:
    """Every plot; returns the file names written."""
    files = plot_throughput(results, out) + plot_iops_qd(results, out) + \
        plot_clone_size(results, out)
    return [f.name for f in files]


if __name__ == "__main__":
    from benchmarks.report import load

    src = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-out/results.json")
    print("\n".join(plot_all(load(src), src.parent)))
