"""The usage chart: cumulative credits per resource over a month, as SVG (matplotlib).

Built from :meth:`BillingService.daily`; the web UI shows it and the API serves it.
"""

from __future__ import annotations

import io
from datetime import datetime
from fractions import Fraction


def render_svg(title: str, days: list[datetime], series: dict[str, list[Fraction]]) -> bytes:
    """An SVG line chart: one line per resource, credits charged so far at each day's end."""
    # Imported here: matplotlib costs ~0.3 s and only the chart needs it.
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasSVG(fig)
    ax = fig.add_subplot()
    for name in sorted(series):
        ax.plot(range(1, len(days) + 1), [float(v) for v in series[name]], marker="o",
                markersize=3, label=name)
    if not series:
        ax.text(0.5, 0.5, "no charges", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("day of the month (charges up to its end)")
    ax.set_ylabel("credits")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(loc="upper left", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()
