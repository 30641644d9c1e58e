"""Regression check: compare the ratios of a new results.json against a saved one.

Usage: ``python -m benchmarks.regress OLD.json NEW.json [--threshold 0.15]``. A ratio
(archipelago vs a peer, oriented so that higher is better) that dropped by more than the
threshold is flagged; the exit status is 1 when any was flagged, else 0. Comparing ratios
rather than absolute numbers keeps the check meaningful across machines and loads.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from benchmarks.report import load, ratios

DEFAULT_THRESHOLD = 0.15


@dataclass
class Change:
    """One ratio present in both runs."""

    key: tuple[str, str, str, str]
    old: float
    new: float

    @property
    def drop(self) -> float:
        """Relative drop (positive = worse)."""
        return 1.0 - self.new / self.old if self.old > 0 else 0.0


def compare(old: dict, new: dict, threshold: float = DEFAULT_THRESHOLD
            ) -> tuple[list[Change], list[Change], list[tuple[str, str, str, str]]]:
    """(regressions, all changes, keys missing from the new run)."""
    ro, rn = ratios(old), ratios(new)
    changes = [Change(k, ro[k], rn[k]) for k in ro if k in rn]
    bad = [c for c in changes if c.drop > threshold]
    missing = [k for k in ro if k not in rn]
    return bad, changes, missing


def main(argv: list[str] | None = None) -> int:
    """Print every compared ratio and flag drops beyond the threshold."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                    help="relative drop that counts as a regression (default 0.15)")
    a = ap.parse_args(argv)
    try:
        old, new = load(a.old), load(a.new)
    except (OSError, ValueError) as e:
        print(f"regress: cannot read results: {e}", file=sys.stderr)
        return 2
    bad, changes, missing = compare(old, new, a.threshold)
    for c in sorted(changes, key=lambda c: -c.drop):
        flag = "REGRESSION" if c in bad else "ok"
        b, m, ar, p = c.key
        print(f"{flag:10s} {b} / {m} / {ar} vs {p}: {c.old:.3f}× -> {c.new:.3f}× "
              f"({-c.drop * 100:+.1f}%)")
    status = {n: b.get("status", "?") for n, b in new.get("benchmarks", {}).items()}
    for bench in dict.fromkeys(k[0] for k in missing):
        keys = [k for k in missing if k[0] == bench]
        why = "not run" if bench not in status else status[bench]
        if why == "ok":
            for _, m, ar, p in keys:
                print(f"{'missing':10s} {bench} / {m} / {ar} vs {p}: not in the new run")
        else:
            print(f"{'missing':10s} {bench}: {len(keys)} ratios ({why} in the new run)")
    print(f"regress: {len(bad)} of {len(changes)} ratios dropped by more than "
          f"{a.threshold * 100:.0f}%" + (f", {len(missing)} missing" if missing else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
