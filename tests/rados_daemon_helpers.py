"""Helpers of the rados-daemon tests: the cluster from $ARCHIPELAGO_CEPH_CONF, daemons on
the rados backend ("hosts"); namespace cleanup is testbed.ceph.purge."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from testbed.ceph import cluster_command
from tests.daemon_helpers import Daemon

POOL = "archipelago"
MiB = 1 << 20


def ceph_conf() -> str:
    """The shared cluster's ceph.conf, or skip the test."""
    conf = os.environ.get("ARCHIPELAGO_CEPH_CONF")
    if not conf:
        pytest.skip("ARCHIPELAGO_CEPH_CONF is unset: no Ceph cluster (scripts/test.sh starts one)")
    return conf


def start_host(d: Path, conf: str, ns: str, *extra: str) -> Daemon:
    """A daemon on the rados backend in data dir ``d`` (tracked by the caller for stop)."""
    h = Daemon(d)
    h.archip("daemon", "start", "--no-nbd", "--json", "--backend", "rados", "--ceph-conf",
             conf, "--pool", POOL, "--namespace", ns, *extra, check=True)
    return h


def owner_of(h: Daemon) -> str:
    """The lock owner string of a daemon's mapper peer."""
    return str(h.status()["mapper"]["owner"])


def pattern(seed: int, n: int) -> bytes:
    """``n`` bytes repeating the 4-byte ``seed``."""
    return (seed.to_bytes(4, "little") * (n // 4 + 1))[:n]


def run_cluster(*args: str) -> str:
    """Run testbed/ceph_cluster.py ARGS; its stdout."""
    p = subprocess.run(cluster_command(*args), capture_output=True, text=True,
                       timeout=120, check=False)
    assert p.returncode == 0, f"ceph_cluster.py {args[0]} failed: {p.stderr}"
    return p.stdout
