"""PostgreSQL for tests: the session's throwaway server (scripts/test.sh exports its URL in
$ARCHIPELAGO_PG_URL) with a fresh database per test, or a private server a test may stop."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_URL_ENV = "ARCHIPELAGO_PG_URL"
SCRIPT = Path(__file__).with_name("pg_cluster.py")


def pg_url_or_skip() -> str:
    """The session server's URL, or skip the test with the reason."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is unset: no PostgreSQL (scripts/test.sh starts one)")
    return url


def _with_db(url: str, name: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


async def _admin(url: str, sql: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(sql))
    finally:
        await engine.dispose()


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new empty database on the server of ``url`` (dropped afterwards); yields its URL."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_db(url, name)
    finally:
        asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run_cluster(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run tests/pg_cluster.py with ``args``."""
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@contextmanager
def private_server() -> Iterator[tuple[Path, str]]:
    """A server of this test alone (it may stop and start it): yields (DIR, URL)."""
    if not os.environ.get(PG_URL_ENV) or not Path("/usr/lib/postgresql/15/bin/postgres").exists():
        pytest.skip(f"{PG_URL_ENV} is unset or PostgreSQL 15 is not installed")
    # Not under pytest's tmp_path: as root the server runs as "postgres", which must reach
    # DIR (pytest's directories are 0700).
    d = Path(tempfile.mkdtemp(prefix="archipelago-pgt-"))
    try:
        p = run_cluster("up", str(d), "--watch-pid", str(os.getpid()))
        assert p.returncode == 0, p.stderr
        yield d, p.stdout.strip().splitlines()[-1]
    finally:
        run_cluster("down", str(d))
        shutil.rmtree(d, ignore_errors=True)
