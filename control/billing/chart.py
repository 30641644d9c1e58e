"""The usage chart: cumulative credits per resource over a month, SVG or PNG (matplotlib).

Built from :meth:`BillingService.daily`; the web UI shows it and the API serves it.
"""

from __future__ import annotations

import io
from datetime import datetime
from fractions import Fraction

from archipelago.errors import InvalidArgument

FORMATS = {"svg": "image/svg+xml", "png": "image/png"}


def render(title: str, days: list[datetime], series: dict[str, list[Fraction]], fmt: str = "svg") -> bytes:
    """A line chart (SVG or PNG): one line per resource, credits charged so far at each day's end."""
    if fmt not in FORMATS:
        raise InvalidArgument(f"bad chart format {fmt!r}: svg or png")
    # Imported here: matplotlib costs ~0.3 s and only the chart needs it.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name in sorted(series):
        ax.plot(range(1, len(days) + 1), [float(v) for v in series[name]], marker="o",
                markersize=3, label=name)
    if not series:
        ax.text(0.5, 0.5, "no charges", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("day of the month (charges up to its end)")
    ax.set_ylabel("credits charged so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(loc="upper left", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else {}, dpi=100)
    return buf.getvalue()
