"""tests/pg_cluster.py itself: a server on `up` reached through the printed URL, data kept
across stop/start (clean or killed), nothing left running after `down`."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg_helpers import private_server, run_cluster
from sqlalchemy.ext.asyncio import create_async_engine

from testbed.procs import processes_of

pytestmark = pytest.mark.timeout(120)




async def _sql(url: str, *stmts: str) -> list[object]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            out = []
            for s in stmts:
                r = await conn.execute(sa.text(s))
                out.append(r.scalar() if r.returns_rows else None)
            return out
    finally:
        await engine.dispose()


def test_up_stop_start_down() -> None:
    with private_server() as (d, url):
        assert url.startswith("postgresql+asyncpg://") and str(d / "run") in url
        assert asyncio.run(_sql(url, "CREATE TABLE t(x int)", "INSERT INTO t VALUES (42)",
                                "SHOW listen_addresses")) == [None, None, ""]
        assert run_cluster("status", str(d)).returncode == 0
        assert run_cluster("stop", str(d)).returncode == 0
        assert run_cluster("status", str(d)).returncode != 0
        assert run_cluster("start", str(d)).returncode == 0
        assert run_cluster("stop", "--kill", str(d)).returncode == 0
        assert run_cluster("start", str(d)).returncode == 0
        assert asyncio.run(_sql(url, "SELECT x FROM t")) == [42]
        assert processes_of(d)  # the server and the watchdog
        assert run_cluster("down", str(d)).returncode == 0
        assert processes_of(d) == []
        assert not (d / "data").exists()


def test_watchdog_counts_a_zombie_as_gone() -> None:
    """A watched process that exited but was never reaped (its parent, like PID 1 in a CI
    sandbox, does not wait) is a zombie that os.kill(pid, 0) still finds: the watchdog
    must tear the server down anyway, or every killed test run leaves one behind."""
    import subprocess
    import time

    if not Path("/usr/lib/postgresql/15/bin/postgres").exists():
        pytest.skip("PostgreSQL 15 is not installed")
    d = Path(tempfile.mkdtemp(prefix="archipelago-pgz-"))
    parent = subprocess.Popen(["sleep", "600"])
    try:
        assert run_cluster("up", str(d), "--watch-pid", str(parent.pid)).returncode == 0
        parent.kill()  # and not waited for until the end: a zombie
        deadline = time.monotonic() + 30
        while processes_of(d) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling a condition, bounded: the watchdog's own period
        assert Path(f"/proc/{parent.pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
        assert processes_of(d) == []
    finally:
        parent.wait()
        run_cluster("down", str(d))
        shutil.rmtree(d, ignore_errors=True)
