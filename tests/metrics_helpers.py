"""Scraping a daemon's Prometheus endpoint in tests, with prometheus_client's own parser."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    r = requests.get(url, timeout=10)
    assert r.status_code == 200
    out: Samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(s: Samples, name: str, **labels: str) -> float:
    """A sample's value (0 when absent)."""
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(url: str, cond: Callable[[Samples], bool], what: str,
             timeout: float = 60.0) -> Samples:
    """Scrape until ``cond`` holds (the counters of other processes land asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        s = scrape(url)
        if cond(s):
            return s
        assert time.monotonic() < deadline, f"{what} never moved"
        time.sleep(0.2)
