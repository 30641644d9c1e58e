"""The throwaway cluster (testbed/ceph_cluster.py, run through the tests/ceph_cluster.py shim that
scripts/test.sh uses): a usable cluster on `up`, nothing left after `down` or the watchdog."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.procs import processes_of

rados = pytest.importorskip("rados", reason="python3-rados is not installed")

pytestmark = [pytest.mark.rados, pytest.mark.timeout(120)]
SCRIPT = Path(__file__).with_name("ceph_cluster.py")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=90, check=False)




@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    if not os.environ.get("ARCHIPELAGO_CEPH_CONF"):
        pytest.skip("ARCHIPELAGO_CEPH_CONF is unset: RADOS tests disabled")
    if os.geteuid() != 0 or not shutil.which("ceph-mon"):
        pytest.skip("needs root and the Ceph daemons")
    d = tmp_path / "c"
    yield d
    _run("down", str(d))


def test_up_gives_size_one_pools_and_down_leaves_nothing(scratch: Path) -> None:
    p = _run("up", str(scratch))
    assert p.returncode == 0, p.stderr
    conf = p.stdout.strip().splitlines()[-1]
    assert conf == str(scratch.resolve() / "ceph.conf")
    assert _run("status", str(scratch)).returncode == 0
    cl = rados.Rados(conffile=conf)
    cl.connect(timeout=10)
    try:
        for pool in ("archipelago", "archipelago-test"):
            ret, out, err = cl.mon_command(json.dumps(
                {"prefix": "osd pool get", "pool": pool, "var": "size", "format": "json"}), b"")
            assert ret == 0, err
            assert json.loads(out)["size"] == 1
    finally:
        cl.shutdown()
    assert len(processes_of(scratch.resolve())) == 2  # one mon, one OSD
    p = _run("down", str(scratch))
    assert p.returncode == 0, p.stderr
    assert processes_of(scratch.resolve()) == []
    assert not (scratch / "ceph.conf").exists()


def test_watchdog_tears_down_when_the_watched_process_dies(scratch: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        p = _run("up", str(scratch), "--watch-pid", str(sleeper.pid))
        assert p.returncode == 0, p.stderr
        assert len(processes_of(scratch.resolve())) == 3  # mon, OSD, watchdog
    finally:
        sleeper.kill()
        sleeper.wait()
    end = time.monotonic() + 30
    while processes_of(scratch.resolve()):
        assert time.monotonic() < end, "the watchdog did not stop the cluster"
        time.sleep(0.1)
    assert not (scratch / "run").exists()
