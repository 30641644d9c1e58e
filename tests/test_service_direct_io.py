"""The mapper peer's direct block I/O (service/direct_io.py) on a real Mapper and file
blocker, without a daemon: the rules of docs/fastpath.md as the mapper peer applies them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from archipelago.blockaccess.coherence import GenPage, slot_of
from archipelago.blocker.file import FileBlocker
from archipelago.mapper import Mapper, Volume
from archipelago.service.direct_io import DirectIO

BS = 64 * 1024


@pytest.fixture()
async def env(tmp_path: Path) -> AsyncIterator[tuple[Mapper, Volume, DirectIO]]:
    """Volume 'v' (8 blocks, block 0 and 1 written) and a DirectIO with its own
    FileBlocker on the same store, as the mapper peer has."""
    blocker = FileBlocker(str(tmp_path / "blocks"))
    mapper = Mapper(blocker, "host:1:test")
    await mapper.create("v", 8 * BS, block_size=BS)
    vol = await mapper.open("v")
    await vol.write(0, b"a" * 2 * BS)
    io = DirectIO(FileBlocker(str(tmp_path / "blocks")))
    yield mapper, vol, io
    await mapper.close()
    await blocker.close()
    await io.blocker.close()


async def test_reads_match_the_mapper(env: tuple[Mapper, Volume, DirectIO]) -> None:
    mapper, vol, io = env
    for off, n in ((0, 3 * BS), (BS - 200, 500), (5 * BS, BS), (BS + 100, 4096)):
        buf = bytearray(n)
        assert io.read_into(vol, memoryview(buf), off)
        assert bytes(buf) == await vol.read(off, n)
    assert io.hits == 4


async def test_in_place_writes_happen(env: tuple[Mapper, Volume, DirectIO]) -> None:
    """Fails if in-place writes silently stop (e.g. may_write_in_place broken)."""
    mapper, vol, io = env
    assert vol.may_write_in_place()
    assert io.write_from(vol, memoryview(b"w" * 4096), 4096, fua=False)
    assert io.write_from(vol, memoryview(b"x" * 1024), BS - 512, fua=True)  # two blocks
    assert io.writes == 2
    assert await vol.read(4096, 4096) == b"w" * 4096
    assert await vol.read(BS - 512, 1024) == b"x" * 1024
    assert not io.write_from(vol, memoryview(b"w" * 10), 3 * BS, fua=False)  # zero entry
    assert not io.write_from(vol, memoryview(bytes(BS)), 0, fua=False)  # whole zero block
    assert io.writes == 2


async def test_no_in_place_write_while_a_snapshot_drains(
        env: tuple[Mapper, Volume, DirectIO], tmp_path: Path) -> None:
    mapper, vol, io = env
    gens = GenPage(str(tmp_path / "mapgen"), writer=True)
    async with vol.drain.exclusive():  # what snapshot, resize and close hold
        assert not vol.may_write_in_place()
        assert not io.write_from(vol, memoryview(b"w" * 4096), 0, fua=False)
        answer = await io.locate(vol, gens, 0, 4)
        assert [owned for _, owned in answer["entries"]] == [False] * 4  # nothing owned
    assert vol.may_write_in_place()
    await mapper.snapshot("v", "s")
    assert not io.write_from(vol, memoryview(b"w" * 4096), 0, fua=False)  # shared now
    await vol.write(0, b"n" * 4096)  # the mapper copies up
    assert io.write_from(vol, memoryview(b"m" * 4096), 4096, fua=False)  # owned again
    snap = await mapper.open("s")
    assert await snap.read(0, 8192) == b"a" * 8192  # the snapshot kept its data
    gens.close()


async def test_a_fenced_writer_declines(env: tuple[Mapper, Volume, DirectIO]) -> None:
    """Another grant of the map (a forced takeover) bumps the fence: the in-place write is
    refused and the volume marked fenced (the mapper path then reports Fenced)."""
    mapper, vol, io = env
    await mapper.blocker.fence_bump(vol.header.uid)
    assert not io.write_from(vol, memoryview(b"w" * 4096), 0, fua=False)
    assert vol.fenced and not vol.may_write_in_place()
    assert await vol.read(0, 4096) == b"a" * 4096


async def test_flush_syncs_what_was_written_in_place(
        env: tuple[Mapper, Volume, DirectIO]) -> None:
    mapper, vol, io = env
    assert io.write_from(vol, memoryview(b"w" * 4096), 0, fua=True)
    assert len(io.dirty) == 0  # FUA: synced before the reply
    assert io.write_from(vol, memoryview(b"w" * 4096), 0, fua=False)
    assert len(io.dirty) == 1
    await io.flush()  # the mapper peer calls it before every volume flush
    assert len(io.dirty) == 0


async def test_locate_answers_the_fence_and_generation(
        env: tuple[Mapper, Volume, DirectIO], tmp_path: Path) -> None:
    mapper, vol, io = env
    gens = GenPage(str(tmp_path / "mapgen"), writer=True)
    a = await io.locate(vol, gens, 0, 4)
    assert a["gen"] == gens.gen(slot_of("v"))
    assert a["fence"] == [io.blocker.fences.path(vol.header.uid), vol.gen]
    assert [bool(p) for p, _ in a["entries"]] == [True, True, False, False]
    io.writes_enabled = False  # ARCHIPELAGO_NO_FAST_WRITE: clients get no fence either
    assert (await io.locate(vol, gens, 0, 1))["fence"] is None
    gens.close()
