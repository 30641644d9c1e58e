"""The NBD plugin's map cache (nbd/peer_cache.py) against a real Mapper, without a daemon.

The mapper peer is played in-process: a fake of the blocking client whose ``ctrl``
answers ``locate`` with the mapper peer's own code (DirectIO.locate) on a private loop,
and the test does what the mapper peer does around its own operations (bump the
generation after a write, hold the slot exclusively around a snapshot).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archipelago.blockaccess.coherence import GenPage
from archipelago.blocker.file import FileBlocker
from archipelago.mapper import Mapper
from archipelago.nbd import peer_cache
from archipelago.nbd.peer_cache import PeerCache
from archipelago.service.direct_io import DirectIO

BS = 64 * 1024


class LocalMapper:
    """A fake blocking client (unit tests only): ``ctrl("locate")`` served in-process."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.blocker = FileBlocker(str(tmp / "blocks"))
        self.mapper = Mapper(self.blocker, "host:1:test")
        self.io = DirectIO(FileBlocker(str(tmp / "blocks")))
        self.gens = GenPage(str(tmp / "mapgen"), writer=True)
        self.run(self.mapper.create("v", 8 * BS, block_size=BS))
        self.vol = self.run(self.mapper.open("v"))
        self.write(0, b"a" * 2 * BS)

    def run(self, coro: Any) -> Any:
        """Run a mapper coroutine to completion."""
        return self.loop.run_until_complete(coro)

    def write(self, offset: int, data: bytes) -> None:
        """A write through the mapper: bumps the generation before it is acknowledged."""
        self.run(self.vol.write(offset, data))
        self.gens.bump("v")

    def ctrl(self, op: str, **a: Any) -> Any:
        """The mapper peer's locate."""
        assert op == "locate" and a["name"] == "v"
        return self.run(self.io.locate(self.vol, self.gens, a["first"], a["count"]))

    def close(self) -> None:
        """Close the mapper, the blockers and the loop."""
        self.run(self.mapper.close())
        self.run(self.blocker.close())
        self.run(self.io.blocker.close())
        self.gens.close()
        self.loop.close()


@pytest.fixture()
def lm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalMapper]:
    monkeypatch.setattr(peer_cache, "REFILL_GAP", 0.0)  # refills never rate-limited here
    m = LocalMapper(tmp_path)
    yield m
    m.close()


def test_known_blocks_are_served_in_place(lm: LocalMapper) -> None:
    """Fails if the cache's in-place writes silently stop happening."""
    pc = PeerCache(lm)
    vc = pc.volume("v", BS)
    assert pc.pwrite(vc, memoryview(b"w" * 4096), 4096, fua=False)
    assert pc.pwrite(vc, memoryview(b"f" * 4096), 8192, fua=True)
    buf = bytearray(3 * BS)
    assert pc.pread(vc, memoryview(buf), 0)  # blocks 0-1 data, block 2 a hole
    expect = bytearray(b"a" * 2 * BS + bytes(BS))
    expect[4096:12288] = b"w" * 4096 + b"f" * 4096
    assert bytes(buf) == expect
    assert (pc.reads, pc.writes, pc.fills) == (1, 2, 1)
    assert len(pc.dirty) == 1  # the FUA write was synced at once
    pc.flush()
    assert len(pc.dirty) == 0
    assert lm.run(lm.vol.read(0, 3 * BS)) == expect
    assert not pc.pwrite(vc, memoryview(b"w" * 10), 3 * BS, fua=False)  # a hole: the mapper
    assert not pc.pwrite(vc, memoryview(bytes(BS)), 0, fua=False)  # whole zero block
    pc.close()


def test_entries_are_valid_for_one_generation(lm: LocalMapper,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pc = PeerCache(lm)
    vc = pc.volume("v", BS)
    buf = memoryview(bytearray(4096))
    assert pc.pread(vc, buf, 0) and pc.fills == 1
    lm.write(0, b"b" * 4096)  # the mapper changed something: entries go stale
    assert pc.pread(vc, buf, 0) and pc.fills == 2  # refilled before use
    assert bytes(buf) == b"b" * 4096
    real = peer_cache.read_pieces

    def racing(plan: Any, out: memoryview) -> bool:  # the mapper bumps during the pread
        lm.gens.bump("v")
        return real(plan, out)

    monkeypatch.setattr(peer_cache, "read_pieces", racing)
    assert not pc.pread(vc, buf, 0)  # the result is dropped: the mapper answers
    pc.close()


def test_no_in_place_write_lands_in_a_snapshot(lm: LocalMapper) -> None:
    pc = PeerCache(lm)
    vc = pc.volume("v", BS)
    assert pc.pwrite(vc, memoryview(b"w" * 4096), 0, fua=False)
    held = lm.gens.exclusive("v")  # what the mapper peer holds around snapshot/resize
    lm.run(held.__aenter__())
    assert not pc.pwrite(vc, memoryview(b"x" * 4096), 0, fua=False)  # the slot is held
    pc.flush()  # the mapper peer flushes in-place writes before the snapshot
    lm.run(lm.mapper.snapshot("v", "s"))
    lm.run(held.__aexit__(None, None, None))
    assert not pc.pwrite(vc, memoryview(b"y" * 4096), 0, fua=False)  # shared: copy-up
    lm.write(0, b"z" * 4096)
    assert pc.pwrite(vc, memoryview(b"q" * 4096), 4096, fua=False)  # owned again
    snap = lm.run(lm.mapper.open("s"))
    assert lm.run(snap.read(0, 8192)) == b"w" * 4096 + b"a" * 4096
    pc.close()


def test_a_fenced_cache_leaves_writes_to_the_mapper(lm: LocalMapper) -> None:
    pc = PeerCache(lm)
    vc = pc.volume("v", BS)
    assert pc.pwrite(vc, memoryview(b"w" * 4096), 0, fua=False)
    lm.run(lm.blocker.fence_bump(lm.vol.header.uid))  # another holder took the map over
    assert not pc.pwrite(vc, memoryview(b"x" * 4096), 0, fua=False)
    assert lm.run(lm.vol.read(0, 4096)) == b"w" * 4096
    pc.close()
