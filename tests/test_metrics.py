"""Prometheus metrics of a running daemon (archipelago/metrics.py, docs/metrics.md):
scraped over HTTP and parsed with prometheus_client's own parser; each counter moves
when its event happens (mapper and blocker requests, latency, copy-ups, open volumes,
blocker bytes and errors, NBD requests of the plugin and the C filter, gateway requests
and bytes, garbage collection and scrub runs)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest
import swiftclient
from daemon_helpers import Daemon
from metrics_helpers import scrape, value, wait_for

nbd = pytest.importorskip("nbd", reason="python3-libnbd is not installed")
pytestmark = pytest.mark.timeout(240)

BLOCK = 64 * 1024
SIZE = 16 * BLOCK
def connect(sock: Path, export: str) -> nbd.NBD:
    """A libnbd handle once nbdkit accepts connections."""
    deadline = time.monotonic() + 30
    while True:
        h = nbd.NBD()
        h.set_export_name(export)
        try:
            h.connect_unix(str(sock))
            return h
        except nbd.Error:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_daemon_metrics_move(tmp_path: Path) -> None:
    """One daemon with NBD (C filter on) and the gateway; every named counter moves."""
    d = Daemon(tmp_path, ["blocker.file.fsync=false", "gateway.listen=127.0.0.1:0",
                          "metrics.listen=127.0.0.1:0", "gc.interval=0.5",
                          "gc.scrub_interval=0.5"])
    try:
        d.archip("daemon", "start", "--gateway", "--json", check=True)
        url = None
        deadline = time.monotonic() + 30
        while url is None:
            url = d.archip("--json", "daemon", "status", check=True).json().get("metrics_url")
            assert url is not None or time.monotonic() < deadline, d.log()[-2000:]
            time.sleep(0.1) if url is None else None
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        assert "metrics http://127.0.0.1:" in d.archip("daemon", "status", check=True).out
        before = scrape(url)

        d.archip("volume", "create", "vm", "--size", str(SIZE), "--block-size", str(BLOCK),
                 check=True)
        h = connect(tmp_path / "nbd.sock", "vm")
        h.pwrite(b"\x01" * (4 * BLOCK), 0)  # allocations: through the plugin and mapper
        wait_for(url, lambda s: value(s, "archipelago_open_volumes") >= 1, "open volumes")
        for k in range(8):  # owned blocks: the C filter writes/reads them in place
            h.pwrite(bytes([k + 2]) * 4096, k * 4096)
            assert h.pread(4096, k * 4096) == bytes([k + 2]) * 4096
        h.flush()
        d.archip("volume", "snapshot", "vm", "snap", check=True)
        h.pwrite(b"\x09" * 512, 512)  # shared with the snapshot now: copy-up
        h.flush()
        h.shutdown()

        s = wait_for(url, lambda s: value(s, "archipelago_nbd_cfilter_requests_total",
                                          kind="write_hit") > 0
                     and value(s, "archipelago_open_volumes") == 0, "C filter counts")
        mapper_writes = ("archipelago_requests_total", (("op", "WRITE"), ("peer", "mapper")))
        assert s[mapper_writes] > before.get(mapper_writes, 0)
        assert value(s, "archipelago_request_seconds_count", peer="mapper", op="WRITE") > 0
        assert value(s, "archipelago_request_seconds_count", peer="blocker", op="CREATE") > 0
        assert value(s, "archipelago_copyups_total") >= 1
        assert value(s, "archipelago_blocker_bytes_total", op="write") >= 4 * BLOCK
        assert value(s, "archipelago_nbd_requests_total", op="write") >= 1
        assert value(s, "archipelago_nbd_requests_total", op="flush") >= 2
        assert value(s, "archipelago_nbd_cfilter_requests_total", kind="read_hit") > 0
        assert ("archipelago_inflight", (("peer", "mapper"),)) in s

        # blocks gone from the store: the blocker peer's read fails, counted (all of vm's:
        # one alone may be the pre-copy-up block only the snapshot still references)
        blocks = tmp_path / "blocks" / "objects"
        for victim in [p for p in blocks.rglob("vm+*") if p.is_file()]:
            os.unlink(victim)
        h = connect(tmp_path / "nbd.sock", "vm")
        with contextlib.suppress(nbd.Error):
            h.pread(SIZE, 0)
        h.shutdown()
        wait_for(url, lambda s: value(s, "archipelago_blocker_errors_total", op="READ") > 0,
                 "blocker errors")

        # the gateway: requests by method and status, bytes in and out
        st = d.archip("--json", "gateway", "status", check=True).json()
        key = d.archip("gateway", "user", "add", "alice", check=True).out.strip()
        sw = swiftclient.Connection(authurl=f"{st['url']}/auth/v1.0", user="alice", key=key,
                                    retries=0, timeout=30)
        sw.put_container("c")
        sw.put_object("c", "o", b"x" * 100000)
        assert sw.get_object("c", "o")[1] == b"x" * 100000
        s = wait_for(url, lambda s: value(s, "archipelago_gateway_requests_total",
                                          method="GET", status="200") > 0, "gateway")
        assert value(s, "archipelago_gateway_requests_total", method="PUT", status="201") >= 1
        assert value(s, "archipelago_gateway_bytes_total", direction="in") >= 100000
        assert value(s, "archipelago_gateway_bytes_total", direction="out") >= 100000

        # periodic upkeep: a collection (nothing is old enough) and a scrub (finds the loss)
        s = wait_for(url, lambda s: value(s, "archipelago_gc_runs_total", result="ok") > 0
                     and value(s, "archipelago_scrub_runs_total", result="problems") > 0,
                     "gc and scrub runs")
        assert value(s, "archipelago_gc_last_objects") > 0
        assert value(s, "archipelago_scrub_problems_total", kind="missing") >= 1
    finally:
        d.stop()
