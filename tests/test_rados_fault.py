"""Fault test: the OSD dies (SIGKILL) while clients write, then comes back.

Runs on its OWN cluster with bluestore on a sparse file under tmp_path: memstore
keeps data only in the OSD's memory, so an OSD restart would lose every object and
"nothing acknowledged is lost" could not hold there. Needs root and the Ceph
daemons; enabled like every RADOS test by $ARCHIPELAGO_CEPH_CONF.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archipelago.errors import BackendUnavailable, NoSpace, TimedOut

pytest.importorskip("rados", reason="python3-rados is not installed")

from archipelago.blocker.rados import RadosBlocker  # noqa: E402
from tests.rados_daemon_helpers import run_cluster  # noqa: E402

pytestmark = [pytest.mark.rados, pytest.mark.timeout(240)]
OP_TIMEOUT = 4.0


@pytest.fixture
def bluestore_cluster(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A private one-OSD bluestore cluster, always torn down."""
    if not os.environ.get("ARCHIPELAGO_CEPH_CONF"):
        pytest.skip("ARCHIPELAGO_CEPH_CONF is unset: RADOS tests disabled")
    if os.geteuid() != 0 or not shutil.which("ceph-osd"):
        pytest.skip("needs root and ceph-osd to run a private cluster")
    d = tmp_path / "ceph"
    try:
        out = run_cluster("up", str(d), "--store", "bluestore", "--size-mb", "2048",
                       "--watch-pid", str(os.getpid()))
        yield out.strip().splitlines()[-1], d
    finally:
        run_cluster("down", str(d))


async def test_osd_killed_while_writing(bluestore_cluster: tuple[str, Path]) -> None:
    conf, d = bluestore_cluster
    b = RadosBlocker(conf, "archipelago", timeout=OP_TIMEOUT)
    acked: dict[str, bytes] = {}
    errors: list[Exception] = []
    stop = asyncio.Event()
    restarted_at: list[float] = []
    acked_after_restart: list[str] = []

    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            name, data = f"w{w}-{i}", os.urandom(64 * 1024 + i)
            i += 1
            try:
                await b.put(name, data)
            except (TimedOut, BackendUnavailable) as e:
                errors.append(e)
                continue
            acked[name] = data
            if restarted_at:
                acked_after_restart.append(name)

    async def until(cond: object, limit: float) -> None:
        end = time.monotonic() + limit
        while not cond():  # type: ignore[operator]
            assert time.monotonic() < end, "condition not reached in time"
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(writer(w)) for w in range(4)]
    try:
        await until(lambda: len(acked) >= 40, 60)
        before_stop = len(acked)
        await asyncio.to_thread(run_cluster, "osd-stop", str(d))
        # In-flight and new writes fail with a clear timeout instead of hanging.
        await until(lambda: len(errors) >= 4, OP_TIMEOUT * 3 + 10)
        await asyncio.to_thread(run_cluster, "osd-start", str(d))
        restarted_at.append(time.monotonic())
        # The same client recovers once it learns the new osdmap.
        await until(lambda: len(acked_after_restart) >= 8, 90)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert before_stop >= 40
    for e in errors:
        assert isinstance(e, TimedOut), e
        assert f"within {OP_TIMEOUT:g}s" in str(e)
    # Nothing acknowledged is lost: every acked put reads back, from this client and a new one.
    fresh = RadosBlocker(conf, "archipelago", timeout=30)
    try:
        for name, data in acked.items():
            assert await b.read(name, 0, len(data)) == data, name
            assert await fresh.read(name, 0, len(data)) == data, name
    finally:
        await fresh.close()
        await b.close()


@pytest.fixture
def tiny_cluster(tmp_path: Path) -> Iterator[str]:
    """A private memstore cluster of 64 MiB, always torn down."""
    if not os.environ.get("ARCHIPELAGO_CEPH_CONF"):
        pytest.skip("ARCHIPELAGO_CEPH_CONF is unset: RADOS tests disabled")
    if os.geteuid() != 0 or not shutil.which("ceph-osd"):
        pytest.skip("needs root and ceph-osd to run a private cluster")
    d = tmp_path / "tiny"
    try:
        out = run_cluster("up", str(d), "--size-mb", "64", "--watch-pid", str(os.getpid()))
        yield out.strip().splitlines()[-1]
    finally:
        run_cluster("down", str(d))


async def test_full_cluster_gives_no_space_and_deletes_still_work(tiny_cluster: str) -> None:
    b = RadosBlocker(tiny_cluster, "archipelago", timeout=OP_TIMEOUT)
    try:
        written = []
        with pytest.raises(NoSpace, match="full"):
            # 96 MiB into 64 MiB, then small objects until the OSD's fullness report
            # reaches the mon (a few ticks): growing writes then fail at once.
            end = time.monotonic() + 60
            for i in range(100000):
                await b.put(f"o{i}", os.urandom(4 << 20 if i < 24 else 64 << 10))
                written.append(f"o{i}")
                if i >= 24:
                    assert time.monotonic() < end, "the cluster never became full"
                    await asyncio.sleep(0.1)
        assert len(written) >= 10
        await b.delete(written[0])  # RADOS lets deletes through a full cluster
        assert not await b.exists(written[0])
        assert await b.size(written[1]) == 4 << 20
    finally:
        await b.close()
