"""Prometheus metrics of every archipelago process (prometheus_client; docs/metrics.md).

The daemon's supervisor gives its children one ``PROMETHEUS_MULTIPROC_DIR``
(``DATA_DIR/run/metrics``), so the mapper peer, blocker peers, nbdkit's plugin and the
gateway each write their samples there and the mapper peer serves them all, merged,
on ``[metrics] listen``. Outside a daemon the metrics live in the process (harmless).
Labels are bounded sets (peer role, op name, method, status), never volume names.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LAT = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
        0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

REQUESTS = Counter("archipelago_requests", "Requests served by a peer", ["peer", "op"])
ERRORS = Counter("archipelago_request_errors", "Requests a peer failed", ["peer", "op"])
LATENCY = Histogram("archipelago_request_seconds", "Time a peer took per request",
                    ["peer", "op"], buckets=_LAT)
INFLIGHT = Gauge("archipelago_inflight", "Requests in flight in a peer", ["peer"],
                 multiprocess_mode="livesum")
REISSUES = Counter("archipelago_reissues", "Blocker requests re-issued after a peer died")
COPYUPS = Counter("archipelago_copyups", "Shared blocks copied up by a write")
OPEN_VOLUMES = Gauge("archipelago_open_volumes", "Volumes open in the mapper",
                     multiprocess_mode="livesum")
BLOCKER_BYTES = Counter("archipelago_blocker_bytes", "Bytes read/written by blocker peers",
                        ["op"])
BLOCKER_ERRORS = Counter("archipelago_blocker_errors", "Blocker operations that failed",
                         ["op"])
GC_RUNS = Counter("archipelago_gc_runs", "Garbage collections run by the daemon", ["result"])
GC_DELETED = Counter("archipelago_gc_deleted_objects", "Objects deleted by garbage collection")
GC_BYTES = Counter("archipelago_gc_reclaimed_bytes", "Bytes reclaimed by garbage collection")
GC_OBJECTS = Gauge("archipelago_gc_last_objects", "Objects listed by the last collection",
                   multiprocess_mode="mostrecent")
SCRUB_RUNS = Counter("archipelago_scrub_runs", "Scrubs run by the daemon", ["result"])
SCRUB_BYTES = Counter("archipelago_scrub_checked_bytes", "Bytes re-hashed by scrubs")
SCRUB_PROBLEMS = Counter("archipelago_scrub_problems", "Corrupt or missing objects found",
                         ["kind"])
NBD_REQUESTS = Counter("archipelago_nbd_requests", "NBD requests the plugin served", ["op"])
NBD_CFILTER = Counter("archipelago_nbd_cfilter_requests",
                      "NBD requests the C filter served or passed on", ["kind"])
NBD_CACHE = Counter("archipelago_nbd_cache_requests",
                    "NBD requests the plugin's map cache served in place, and its refills",
                    ["kind"])
GW_REQUESTS = Counter("archipelago_gateway_requests", "Gateway HTTP requests",
                      ["method", "status"])
GW_BYTES = Counter("archipelago_gateway_bytes", "Gateway body bytes", ["direction"])
DHCP_RESTARTS = Counter("archipelago_dhcp_restarts",
                        "dnsmasq processes of networks that died and were restarted")


def registry() -> CollectorRegistry:
    """What the endpoint serves: every process's samples in multiprocess mode."""
    from prometheus_client import REGISTRY

    if not os.environ.get(ENV):
        return REGISTRY
    from prometheus_client import multiprocess

    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    return reg


def totals(name: str) -> dict[str, float]:
    """A counter's value per ``kind`` label, summed over every process (``name``
    without ``_total``); empty if nothing was counted yet."""
    out: dict[str, float] = {}
    for fam in registry().collect():
        for s in fam.samples:
            if s.name == name + "_total":
                k = s.labels.get("kind", "")
                out[k] = out.get(k, 0.0) + s.value
    return out


def prepare_dir(path: str) -> None:
    """Create (0700) or empty the multiprocess directory before the children start."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    for f in os.listdir(path):
        if f.endswith(".db"):
            os.unlink(os.path.join(path, f))


def mark_dead(pid: int) -> None:
    """Drop a dead child's live gauges (its counters stay summed)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def serve(listen: str) -> tuple[Any, str] | None:
    """Start the exposition on ``host:port`` in a thread; (server, URL), None if off."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    from prometheus_client import start_http_server

    server, _ = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry())
    real = server.server_address
    return server, f"http://{real[0]}:{real[1]}/metrics"


class PeerMetrics:
    """Per-request accounting of one peer role (label children cached: hot path)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._c: dict[str, tuple[Any, Any, Any]] = {}
        self.inflight = INFLIGHT.labels(role)

    def _children(self, op: str) -> tuple[Any, Any, Any]:
        c = self._c.get(op)
        if c is None:
            c = self._c[op] = (REQUESTS.labels(self.role, op), LATENCY.labels(self.role, op),
                               ERRORS.labels(self.role, op))
        return c

    def done(self, op: str, seconds: float | None, failed: bool, nbytes: int = 0) -> None:
        """One request of ``op`` finished (``seconds`` None: answered inline)."""
        req, lat, err = self._children(op)
        req.inc()
        if seconds is not None:
            lat.observe(seconds)
        if failed:
            err.inc()
        if self.role == "blocker":
            if failed:
                BLOCKER_ERRORS.labels(op).inc()
            elif nbytes:
                BLOCKER_BYTES.labels("read" if op == "READ" else "write").inc(nbytes)
