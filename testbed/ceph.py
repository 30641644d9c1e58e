"""A throwaway Ceph cluster for a block of code, and removing a RADOS namespace's objects."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: The cluster's command line (up / down / osd-stop / osd-start / status).
CLUSTER_SCRIPT = Path(__file__).resolve().with_name("ceph_cluster.py")


def cluster_command(*args: str) -> list[str]:
    """argv running the cluster script with ``args`` in this interpreter."""
    return [sys.executable, str(CLUSTER_SCRIPT), *args]


@contextlib.contextmanager
def throwaway_cluster(conf: str | None, size_mb: int) -> Iterator[str]:
    """``conf`` when given; else the ceph.conf of a new cluster of ``size_mb`` (always torn down,
    also by its watchdog if this process dies)."""
    if conf:
        yield conf
        return
    tmp = tempfile.mkdtemp(prefix="archipelago-ceph.")
    try:
        out = subprocess.run(
            cluster_command("up", tmp, "--size-mb", str(size_mb), "--watch-pid", str(os.getpid())),
            capture_output=True, text=True, timeout=120, check=True).stdout
        yield out.strip().splitlines()[-1]
    finally:
        subprocess.run(cluster_command("down", tmp), timeout=60, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def purge(conf: str, ns: str, pool: str, timeout: int = 30) -> None:
    """Remove every object of namespace ``ns`` of ``pool`` (lock objects included)."""
    import rados  # Ceph's own binding (python3-rados)

    cl = rados.Rados(conffile=conf)
    cl.connect(timeout=timeout)
    try:
        io = cl.open_ioctx(pool)
        io.set_namespace(ns)
        for obj in list(io.list_objects()):
            io.remove_object(obj.key)
        io.close()
    finally:
        cl.shutdown()
