"""Mapper operations one by one: copy-up, concurrency, lazy loading, hash, remove, rename."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from mapper_helpers import GatedBlocker, KiB, MiB, missing_objects

from archipelago.blocker.base import Blocker
from archipelago.errors import Busy, InvalidArgument, NotFound
from archipelago.hashing import ZERO_HASH, object_hash
from archipelago.mapper import Mapper
from archipelago.mapper.format import CHUNK_SIZE, ENTRIES_PER_CHUNK, chunk_name, encode_header, header_name
from archipelago.mapper.mapper import tombstone
from archipelago.wire import Extent

pytestmark = pytest.mark.timeout(60)
BS = 64 * KiB
TiB = 1 << 40


@pytest.fixture
def gb(make_blocker: Callable[..., Blocker]) -> GatedBlocker:
    """A counting/gating blocker over the parametrized backend."""
    return GatedBlocker(make_blocker())


async def snap_and_clone(m: Mapper) -> None:
    await m.create("v", 4 * BS, BS)
    v = await m.open("v")
    await v.write(0, b"A" * (2 * BS), fua=True)
    await v.close()
    await m.snapshot("v", "s")
    await m.clone("s", "c")


async def test_concurrent_writers_copy_up_once(gb: GatedBlocker) -> None:
    m = Mapper(gb, "h:1:a")
    await snap_and_clone(m)
    c = await m.open("c")
    gb.counts.clear()
    await asyncio.gather(*(c.write(i * 1000, bytes([i + 1]) * 10) for i in range(8)))
    assert gb.counts.get("copy", 0) == 1
    expect = bytearray(b"A" * BS)
    for i in range(8):
        expect[i * 1000 : i * 1000 + 10] = bytes([i + 1]) * 10
    assert await c.read(0, BS) == bytes(expect)
    s = await m.open("s")
    assert await s.read(0, BS) == b"A" * BS
    gb.counts.clear()
    await c.write(BS, b"B" * BS)  # whole block: no copy
    assert gb.counts.get("copy", 0) == 0
    await m.close()


async def test_snapshot_waits_for_inflight_writes(gb: GatedBlocker) -> None:
    m = Mapper(gb, "h:1:a")
    await m.create("v", 2 * BS, BS)
    v = await m.open("v")
    await v.write(0, b"x" * BS)
    gb.arm("write")
    w = asyncio.create_task(v.write(5, b"late"))
    await asyncio.wait_for(gb.reached.wait(), 10)
    snap = asyncio.create_task(m.snapshot("v", "s"))
    await asyncio.sleep(0.05)
    assert not snap.done()
    gb.release.set()
    await w
    await snap
    s = await m.open("s")
    assert await s.read(0, 10) == b"xxxxxlatex"
    await m.close()


@pytest.mark.parametrize("op", ["resize", "remove"])
async def test_resize_and_remove_wait_for_inflight_writes(gb: GatedBlocker, op: str) -> None:
    m = Mapper(gb, "h:1:a")
    await m.create("v", 2 * BS, BS)
    v = await m.open("v")
    await v.write(0, b"x" * BS)
    gb.arm("write")
    w = asyncio.create_task(v.write(5, b"late"))
    await asyncio.wait_for(gb.reached.wait(), 10)
    other = asyncio.create_task(m.resize("v", BS) if op == "resize" else m.remove("v"))
    await asyncio.sleep(0.05)
    assert not other.done()  # held off by the write in flight
    gb.release.set()
    await w  # the write that was in flight completes normally
    await other
    if op == "resize":
        assert (await m.info("v")).size == BS
        assert await v.read(0, 10) == b"xxxxxlatex"
    else:
        with pytest.raises(NotFound):
            await m.info("v")
        assert await missing_objects(m) == []
    await m.close()


async def test_clone_of_snapshot_removed_by_another_host(
    gb: GatedBlocker, make_blocker: Callable[..., Blocker]
) -> None:
    other = Mapper(make_blocker(), "h:2:b")
    m = Mapper(gb, "h:1:a")
    await snap_and_clone(other)
    gb.arm("read", "map@")  # pause while loading the snapshot's first chunk
    clone = asyncio.create_task(m.clone("s", "n"))
    await asyncio.wait_for(gb.reached.wait(), 10)
    await other.remove("s")
    gb.release.set()
    with pytest.raises(NotFound):
        await clone
    names = {vi.name for vi in await m.list()}
    assert names == {"v", "c"}
    live_uids = {(await m.live(n)).uid for n in names}
    for obj in await gb.list("map@"):
        assert obj.split("@")[1] in live_uids, obj  # no chunk of the failed clone left
    assert await missing_objects(m) == []


async def test_remove_and_clone_race_in_process(gb: GatedBlocker) -> None:
    m = Mapper(gb, "h:1:a")
    await snap_and_clone(m)
    res = await asyncio.gather(m.remove("s"), m.clone("s", "n"), return_exceptions=True)
    assert res[0] is None
    assert res[1] is None or isinstance(res[1], NotFound)
    if res[1] is None:
        n = await m.open("n")
        assert await n.read(0, 3) == b"AAA"
    assert await missing_objects(m) == []


async def test_one_tib_opens_lazily_and_map_stays_small(gb: GatedBlocker) -> None:
    m = Mapper(gb, "h:1:a")
    await m.create("big", TiB)
    v = await m.open("big")
    for i in range(0, TiB // (4 * MiB), 4096):  # one block in every chunk
        await v.write(i * 4 * MiB, b"z" * 512)
    await v.write(TiB - 512, b"e" * 512)
    await m.close()
    m2 = Mapper(gb, "h:1:b")
    gb.counts.clear()
    v = await m2.open("big")
    assert sum(gb.counts.values()) <= 4  # the header only (read again once locked)
    assert await v.read(TiB - 512, 512) == b"e" * 512
    h = await m2.live("big")
    assert len(h.stored_chunks()) == 64
    map_bytes = len(encode_header(h)) + 64 * CHUNK_SIZE
    assert map_bytes <= 10 * MiB
    exts = await v.extents(0, TiB)
    assert sum(e.length for e in exts) == TiB
    assert exts[0] == Extent(0, 4 * MiB, False) and exts[1].zero
    await m2.close()


async def test_extents_zero_and_trim(gb: GatedBlocker) -> None:
    m = Mapper(gb, "h:1:a")
    await m.create("v", 4 * BS + 10, BS)
    v = await m.open("v")
    assert await v.extents(0, 4 * BS + 10) == [Extent(0, 4 * BS + 10, True)]
    await v.write(BS + 3, b"q")
    await v.write(4 * BS, b"t" * 10)
    assert await v.extents(0, 4 * BS + 10) == [
        Extent(0, BS, True),
        Extent(BS, BS, False),
        Extent(2 * BS, 2 * BS, True),
        Extent(4 * BS, 10, False),
    ]
    objs = set(await gb.list())
    gb.counts.clear()
    await v.zero(0, 2 * BS)  # whole blocks: entries only, the owned object is deleted
    assert gb.counts.get("write", 0) == 0 and gb.counts.get("delete", 0) == 1
    assert len(set(await gb.list()) ^ objs) == 1
    gb.counts.clear()
    await v.trim(2 * BS + 5, 100)  # partial range of a hole: nothing to do
    assert gb.counts.get("write", 0) == gb.counts.get("put", 0) == 0
    assert await v.extents(0, 4 * BS + 10) == [Extent(0, 4 * BS, True), Extent(4 * BS, 10, False)]
    await m.close()


async def test_remove_deletes_only_owned_blocks(gb: GatedBlocker) -> None:
    m = Mapper(gb, "h:1:a")
    await snap_and_clone(m)
    v = await m.open("v")
    await v.write(2 * BS, b"own" * 100)  # owned by v alone
    await v.write(0, b"new")  # copy-up: the snapshot keeps the old block
    c = await m.open("c")
    await c.write(BS, b"cc")
    await m.remove("v")
    with pytest.raises(InvalidArgument):
        await v.read(0, 1)  # the open handle died with the volume
    assert await (await m.open("s")).read(0, 4) == b"AAAA"
    await m.remove("s")
    assert await c.read(0, 4) == b"AAAA" and await c.read(BS, 3) == b"ccA"
    assert await missing_objects(m) == []
    await m.remove("c")
    assert await gb.list("map@") == []
    await m.close()


async def test_tombstone_keeps_epochs_and_info_json(gb: GatedBlocker) -> None:
    m = Mapper(gb, "h:1:a")
    a = await m.create("x", BS, BS)
    v = await m.open("x")
    await v.write(0, b"1")
    await v.close()
    await m.snapshot("x", "x1")
    await m.remove("x")
    b = await m.create("x", BS, BS)
    assert b.epoch == a.epoch + 2  # one snapshot, then one past the tombstone
    info = await m.info("x")
    assert json.loads(json.dumps(info.to_dict()))["name"] == "x"
    assert info.lock_owner is None
    v = await m.open("x")
    assert await v.read(0, 1) == b"\0"
    assert (await m.info("x")).lock_owner == "h:1:a"
    await m.close()
    assert (await m.info("x")).lock_owner is None


async def test_hash_dedup_and_pithos_roundtrip(gb: GatedBlocker) -> None:
    m = Mapper(gb, "h:1:a")
    size = 9 * MiB + 7
    await m.create("p", size)
    v = await m.open("p")
    await v.write(1, b"hello")
    await v.write(8 * MiB, b"w" * MiB)
    await m.snapshot("p", "p1")
    await v.write(4 * MiB, bytes(4 * MiB))  # zeros: stays a hole
    await m.snapshot("p", "p2")
    data = await (await m.open("p1")).read(0, size)
    h1, h2 = await m.hash("p1"), await m.hash("p2")
    assert h1.name == h2.name == object_hash(data) and h1.kind == "hashed"
    hashes, nbytes = await m.hashmap(h1.name)
    assert nbytes == size and hashes[1] == ZERO_HASH and len(hashes) == 3
    content = [n for n in await gb.list() if len(n) == 64]
    assert sorted(content) == sorted(set(hashes) - {ZERO_HASH})
    img = await m.clone_hashmap("img", hashes, nbytes, readonly=True)
    assert img.kind == "pithos" and img.readonly
    assert await m.hashmap("img") == (hashes, nbytes)
    big = await m.clone_hashmap("w", hashes, nbytes, size=16 * MiB)
    assert not big.readonly and big.size == 16 * MiB
    w = await m.open("w")
    await w.write(0, b"X")
    assert await w.read(0, 6) == b"Xhello"[:1] + b"hello"
    assert await (await m.open("img")).read(0, 6) == b"\0hello"
    c = await m.clone(h1.name, "fromhash")
    assert await (await m.open(c.name)).read(0, size) == data
    empty = await m.clone_hashmap("empty", [ZERO_HASH], 0, readonly=True)
    assert empty.size == 0 and await m.hashmap("empty") == ([ZERO_HASH], 0)
    assert await missing_objects(m) == []
    await m.close()


@pytest.mark.parametrize("stage", [1, 2])
async def test_interrupted_rename_settles(gb: GatedBlocker, stage: int) -> None:
    m = Mapper(gb, "h:1:a")
    await m.create("old", BS, BS)
    h = await m.live("old")
    await gb.put(header_name("old"), encode_header(type(h)(**{**h.__dict__, "moving_to": "new"})))
    if stage == 2:  # the new header was written too, the tombstone was not
        await gb.put(header_name("new"), encode_header(type(h)(**{**h.__dict__, "name": "new"})))
        with pytest.raises(NotFound):
            await m.info("old")
        assert (await m.info("new")).name == "new"
        assert (await m.read_header("old")) == tombstone(h)
    else:
        assert (await m.info("old")).name == "old"
        with pytest.raises(NotFound):
            await m.info("new")
    assert [vi.name for vi in await m.list()] == (["new"] if stage == 2 else ["old"])


async def test_locks_and_shared_opens(gb: GatedBlocker, make_blocker: Callable[..., Blocker]) -> None:
    m = Mapper(gb, "h:1:a")
    await m.create("v", BS, BS)
    v1, v2 = await asyncio.gather(m.open("v"), m.open("v"))
    assert v1 is v2
    with pytest.raises(Busy):
        await m.rename("v", "w")
    with pytest.raises(Busy):
        await m.unlock("v")
    await v1.close()
    await v2.write(0, b"still open")
    await v2.close()
    await m.lock("v")
    other = Mapper(make_blocker(), "h:2:b")
    assert (await other.info("v")).lock_owner == "h:1:a"
    await m.unlock("v")
    assert (await other.info("v")).lock_owner is None
    await m.lock("v")
    await other.unlock("v", force=True)
    assert (await m.info("v")).lock_owner is None
    await m.close()


async def test_one_entry_update_rewrites_one_chunk_and_zero_block_is_a_zero_entry(
        gb: GatedBlocker) -> None:
    m = Mapper(gb, "h:1:a")
    per = ENTRIES_PER_CHUNK
    await m.create("v", 3 * per * BS, BS)
    v = await m.open("v")
    for blk in (0, per, 2 * per):  # one stored chunk each
        await v.write(blk * BS, b"d" * 7, fua=True)

    async def chunks() -> dict[str, bytes]:
        return {n: bytes(await gb.read(n, 0, CHUNK_SIZE)) for n in await gb.list("map@")}

    before = await chunks()
    assert len(before) == 3
    await v.write((per + 1) * BS + 9, b"e", fua=True)  # a new entry in chunk 1
    after = await chunks()
    assert [n for n in after if after[n] != before.get(n)] == [chunk_name(v.header.uid, 1)]
    await v.write(per * BS, bytes(BS), fua=True)  # all-zero whole block: a zero entry
    again = await chunks()
    assert [n for n in again if again[n] != after[n]] == [chunk_name(v.header.uid, 1)]
    assert await v.extents(per * BS, 2 * BS) == [Extent(per * BS, BS, True),
                                                 Extent((per + 1) * BS, BS, False)]
    assert await v.read(per * BS, BS) == bytes(BS)
    await m.close()
