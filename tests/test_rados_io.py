"""The mapper peer's direct small I/O on RADOS (archipelago/service/rados_io.py,
blocker/rados_batch.py): the path is really taken, a writer whose map was taken over
can no longer write through it, a snapshot never shares a block an in-flight direct
write lands in (acknowledged writes survive the copy-up), a write never recreates a
removed object, and a blocklisted data client is replaced. Needs the project's Ceph
($ARCHIPELAGO_CEPH_CONF) except the Drain test."""

from __future__ import annotations

import asyncio
import errno
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from archipelago.errors import ArchipelagoError
from archipelago.mapper.drain import Drain
from testbed.ceph import purge
from tests.daemon_helpers import Daemon
from tests.rados_daemon_helpers import POOL, ceph_conf, pattern, start_host

pytestmark = [pytest.mark.timeout(240)]
MiB = 1 << 20
K4 = 4096


async def test_nowait_entry_holds_off_an_exclusive_drain() -> None:
    """try_enter/leave (a direct write in flight) count like ``shared``: an exclusive
    entry (snapshot, close) waits for leave, and new entries are refused meanwhile."""
    d = Drain()
    assert d.try_enter()
    entered = asyncio.Event()

    async def excl() -> None:
        async with d.exclusive():
            entered.set()

    t = asyncio.create_task(excl())
    while not d.draining:
        await asyncio.sleep(0)  # yield until the exclusive entry waits
    assert not d.try_enter()
    assert not entered.is_set()
    d.leave()
    await asyncio.wait_for(t, 10)
    assert entered.is_set() and d.try_enter()
    d.leave()


class _FakeBatch:
    """Records started writes (unit test: the RADOS side is not under test here)."""

    def __init__(self) -> None:
        self.started: list[tuple[bytes, int, object]] = []

    def write_existing(self, oid: bytes, buf: memoryview, offset: int, token: object) -> None:
        self.started.append((oid, offset, token))


class _Fence:
    def registered(self, key: str, gen: int, addr: str) -> bool:
        return gen == 1


class _D:
    data_len = K4


class _Req:
    """The fields of a WRITE request RadosIO reads."""

    def __init__(self, offset: int) -> None:
        self.offset, self.data, self.d = offset, memoryview(bytearray(pattern(5, K4))), _D()
        self.serviced = 0

    def reply(self, *, serviced: int) -> None:
        self.serviced = serviced


async def test_in_flight_direct_write_holds_off_a_snapshot() -> None:
    """A direct write started and not completed keeps the volume's Drain: a snapshot
    waits for it (so it never lands in a block the snapshot shares), new direct writes
    are refused while the snapshot waits, and after it the block is shared (refused:
    the mapper copies up)."""
    from archipelago.blocker.memory import MemoryBlocker
    from archipelago.mapper import Mapper
    from archipelago.service.rados_io import DECLINE, STARTED, RadosIO

    m = Mapper(MemoryBlocker(), "test:1:owner")
    await m.create("v", 4 * MiB)
    v = await m.open("v")
    await v.write(0, pattern(1, 4 * MiB))  # an owned block
    v.gen = 1  # as if granted a fence generation (the memory blocker has no fences)
    rio = RadosIO(None, "", _Fence())
    rio.batch = _FakeBatch()  # type: ignore[assignment]
    assert rio.write(v, _Req(K4)) == STARTED  # type: ignore[arg-type]
    snap = asyncio.create_task(m.snapshot("v", "s"))
    while not v.drain.draining:
        await asyncio.sleep(0)  # yield until the snapshot waits for the drain
    assert rio.write(v, _Req(2 * K4)) == DECLINE  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    assert not snap.done(), "the snapshot ran while a direct write was in flight"
    _, _, token = rio.batch.started[0]  # type: ignore[attr-defined]
    assert rio.finish(token, 0)  # type: ignore[arg-type]
    await asyncio.wait_for(snap, 10)
    assert rio.write(v, _Req(3 * K4)) == DECLINE  # type: ignore[arg-type]
    assert len(rio.batch.started) == 1  # type: ignore[attr-defined]
    await m.close()


@pytest.fixture
async def batch() -> AsyncIterator[tuple[object, object, Got]]:
    """(RadosBlocker, AioBatch on its ioctx, the completions handed over so far)."""
    pytest.importorskip("rados", reason="python3-rados is not installed")
    from archipelago.blocker.rados import RadosBlocker
    from archipelago.blocker.rados_batch import AioBatch

    conf = ceph_conf()
    b = RadosBlocker(conf, "archipelago-test", f"b-{uuid.uuid4().hex}")
    await b.open()
    got = Got()
    assert b._direct is not None
    ab = AioBatch(b._direct.ptr, asyncio.get_running_loop(), got.add)
    yield b, ab, got
    for name in await b.list():
        await b.delete(name)
    await b.close()


class Got(list):
    """Completions handed over by an AioBatch, with an event per pass."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def add(self, done: list[tuple[object, int]]) -> None:
        """The batch's on_batch."""
        self.extend(done)
        self.event.set()


async def _wait(got: Got, n: int) -> None:
    async with asyncio.timeout(30):
        while len(got) < n:
            got.event.clear()
            await got.event.wait()


async def test_batch_write_never_recreates_a_removed_object(batch: tuple) -> None:
    b, ab, got = batch
    buf = memoryview(bytearray(pattern(7, K4)))
    ab.write_existing(b"gone", buf, 0, "w1")
    await _wait(got, 1)
    assert got == [("w1", -errno.ENOENT)]
    assert not await b.exists("gone")
    await b.put("here", b"\1" * (2 * K4))
    ab.write_existing(b"here", buf, K4, "w2")
    out = memoryview(bytearray(3 * K4))
    await _wait(got, 2)
    ab.read(b"here", out, 0, "r1")  # short: the object ends at 2 * K4
    ab.read(b"gone", out[:K4], 0, "r2")
    await _wait(got, 4)
    assert dict(got[2:]) == {"r1": 2 * K4, "r2": -errno.ENOENT}
    assert bytes(out[: 2 * K4]) == b"\1" * K4 + pattern(7, K4)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    """Two daemons ("hosts") on one namespace of the project's cluster."""
    conf = ceph_conf()
    ns = f"rio-{uuid.uuid4().hex[:12]}"
    started: list[Daemon] = []
    try:
        for name in ("a", "b"):
            started.append(start_host(tmp_path / name, conf, ns))
        yield started[0], started[1]
    finally:
        for h in started:
            h.stop()
        purge(conf, ns, POOL)


def rio(h: Daemon) -> dict[str, int]:
    """The mapper peer's direct RADOS I/O counters."""
    return h.status()["mapper"]["rados_io"]


def test_direct_path_is_fenced_on_takeover_and_recovers(hosts: tuple[Daemon, Daemon]) -> None:
    """A writes in place through the direct path; B opens with force; A's next direct
    write fails and none of its bytes land; A's other volume goes on, on a new data
    client registered afresh (direct writes resume)."""
    from archipelago.client.blocking import Client

    a, b = hosts
    ca, cb = Client.connect(a.data_dir), Client.connect(b.data_dir)
    try:
        for vol in ("vm", "other"):
            ca.create(vol, 8 * MiB)
        va, vo = ca.open("vm"), ca.open("other")
        for v in (va, vo):
            v.write(0, pattern(1, 4 * MiB))  # allocation: the mapper path registers us
        before = rio(a)["writes"]
        for k in range(8):
            va.write(k * K4, pattern(10 + k, K4))
            vo.write(k * K4, pattern(20 + k, K4))
        assert rio(a)["writes"] >= before + 16, rio(a)
        reads = rio(a)["reads"]
        assert bytes(va.read(K4, K4)) == pattern(11, K4)
        assert rio(a)["reads"] > reads
        vb = cb.open("vm", force=True)  # A is alive and has it open
        vb.write(K4, pattern(99, K4))
        with pytest.raises(ArchipelagoError):
            va.write(2 * K4, pattern(66, K4))
        assert bytes(vb.read(0, 4 * K4)) == (pattern(10, K4) + pattern(99, K4) + pattern(12, K4)
                                            + pattern(13, K4))
        # A's other volume: its direct writes fail over to the mapper path, then resume.
        for k in range(8):
            vo.write(k * K4, pattern(40 + k, K4))
        resumed = rio(a)["writes"]
        for k in range(8):
            vo.write(k * K4, pattern(50 + k, K4))
        assert rio(a)["writes"] > resumed, rio(a)
        assert bytes(vo.read(0, 8 * K4)) == b"".join(pattern(50 + k, K4) for k in range(8))
        vb.close()
        vo.close()
    finally:
        ca.close()
        cb.close()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Daemon]:
    conf = ceph_conf()
    ns = f"rio-{uuid.uuid4().hex[:12]}"
    h = start_host(tmp_path / "a", conf, ns)
    try:
        yield h
    finally:
        h.stop()
        purge(conf, ns, POOL)


def test_snapshot_never_loses_a_direct_write_in_flight(host: Daemon) -> None:
    """Direct 4 KiB writes race a snapshot of their block; then a copy-up write of the
    block: every acknowledged write is in the volume, and the snapshot holds, per slot,
    the old or the new data (never anything else)."""
    from archipelago.client import AsyncClient

    slots = 64

    async def run() -> None:
        c = await AsyncClient.connect(host.data_dir)
        try:
            await c.create("v", 4 * MiB)
            v = await c.open("v")
            await v.write(0, pattern(1, 4 * MiB))
            await v.write(0, pattern(2, K4))  # registers the data client
            for rnd in range(3):
                new = [pattern(100 * rnd + k, K4) for k in range(slots)]
                old = bytes(await v.read(0, slots * K4))
                writes = [asyncio.ensure_future(v.write(k * K4, new[k])) for k in range(slots)]
                await c.snapshot("v", f"s{rnd}")
                await asyncio.gather(*writes)
                await v.write(slots * K4, pattern(7, K4))  # the block is shared: copy-up
                got = bytes(await v.read(0, slots * K4))
                assert got == b"".join(new), f"round {rnd}: an acknowledged write was lost"
                async with (await c.open(f"s{rnd}")) as s:
                    snap = bytes(await s.read(0, slots * K4))
                for k in range(slots):
                    piece = snap[k * K4 : (k + 1) * K4]
                    assert piece in (old[k * K4 : (k + 1) * K4], new[k]), (rnd, k)
            stats = (await c.ctrl("status"))["rados_io"]
            assert stats["writes"] > 0, stats
            await v.close()
        finally:
            c.close()

    asyncio.run(run())


def test_direct_io_off_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ARCHIPELAGO_RADOS_NO_FAST=1 (the benchmark's A/B side): no direct path, same data."""
    from archipelago.client.blocking import Client

    conf = ceph_conf()
    ns = f"rio-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("ARCHIPELAGO_RADOS_NO_FAST", "1")
    h = start_host(tmp_path / "a", conf, ns)
    try:
        with Client.connect(h.data_dir) as c:
            c.create("v", 4 * MiB)
            with c.open("v") as v:
                v.write(0, pattern(3, MiB))
                v.write(K4, pattern(4, K4))
                assert bytes(v.read(0, 2 * K4)) == pattern(3, K4) + pattern(4, K4)
        assert h.status()["mapper"]["rados_io"] is None
        assert os.environ["ARCHIPELAGO_RADOS_NO_FAST"] == "1"
    finally:
        h.stop()
        purge(conf, ns, POOL)
