"""The direct backend's fast path against the real mapper and file blocker (no nbdkit)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from archipelago.blockaccess.coherence import Gate
from archipelago.blocker.file import FileBlocker
from archipelago.blocker.memory import MemoryBlocker
from archipelago.mapper import Mapper
from archipelago.nbd.fastpath import FastPath

BS = 64 * 1024


async def _setup(tmp_path: Path) -> tuple[FileBlocker, Mapper, FastPath]:
    blocker = FileBlocker(str(tmp_path / "blocks"))
    mapper = Mapper(blocker, "host:1:test")
    await mapper.create("v", 8 * BS, block_size=BS)
    return blocker, mapper, FastPath(blocker)


async def test_reads_match_the_mapper(tmp_path: Path) -> None:
    blocker, mapper, fp = await _setup(tmp_path)
    vol = await mapper.open("v")
    buf = bytearray(3 * BS)
    assert not fp.pread(vol, memoryview(buf), 0)  # chunk not loaded yet: declines
    await vol.write(BS - 100, b"x" * 300)
    await vol.read(0, 1)  # loads the chunk
    for off, n in ((0, 3 * BS), (BS - 200, 500), (5 * BS, BS), (BS + 100, 4096)):
        out = bytearray(n)
        assert fp.pread(vol, memoryview(out), off)
        assert bytes(out) == await vol.read(off, n)
    await mapper.close()
    await blocker.close()


async def test_writes_only_into_owned_blocks(tmp_path: Path) -> None:
    blocker, mapper, fp = await _setup(tmp_path)
    vol = await mapper.open("v")
    data = memoryview(b"w" * 4096)
    assert not fp.pwrite(vol, data, 0, fua=False)  # zero entry: the mapper allocates
    await vol.write(0, b"a" * BS)
    assert fp.pwrite(vol, data, 4096, fua=True)  # owned now: in place
    assert await vol.read(4096, 4096) == b"w" * 4096
    assert not fp.pwrite(vol, memoryview(bytes(BS)), 0, fua=False)  # whole zero block
    assert not fp.pwrite(vol, data, BS - 2048, fua=False)  # spans into a zero block
    with fp.gate.exclusive():
        assert not fp.pwrite(vol, data, 0, fua=False)  # map-level operation running
        await mapper.snapshot("v", "s")
    assert not fp.pwrite(vol, data, 0, fua=False)  # shared with the snapshot now
    await vol.write(0, b"n" * 4096)  # the mapper copies up
    snap = await mapper.open("s")
    await snap.read(0, 1)
    out = bytearray(8192)
    assert fp.pread(snap, memoryview(out), 0)
    assert bytes(out) == b"a" * 4096 + b"w" * 4096  # the snapshot kept its data
    assert fp.pwrite(vol, data, 8192, fua=False)  # the copied-up block is owned again
    await vol.flush()
    await mapper.close()
    await blocker.close()


def test_not_for_other_blockers() -> None:
    fp = FastPath(MemoryBlocker())
    assert not fp.enabled and not fp.writes


def test_gate_waits_for_writers() -> None:
    gate = Gate()
    assert gate.try_shared()
    entered = threading.Event()

    def exclusive() -> None:
        with gate.exclusive():
            entered.set()

    t = threading.Thread(target=exclusive)
    t.start()
    time.sleep(0.05)
    assert not entered.is_set()  # a writer is still inside
    assert not gate.try_shared()  # new writers take the slow path meanwhile
    gate.leave()
    t.join(5)
    assert entered.is_set()
    assert gate.try_shared()
    gate.leave()
