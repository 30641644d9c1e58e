"""The blocker contract, run against every backend (memory, file, rados)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest

from archipelago.blocker.base import MAX_IO_SIZE, MAX_NAME_LEN, MAX_OFFSET, Blocker, make_owner
from archipelago.errors import InvalidArgument, Locked, NotFound
from archipelago.hashing import ZERO_HASH, block_hash

pytestmark = pytest.mark.timeout(60)


async def test_absent_object_reads_as_zeros(blocker: Blocker) -> None:
    assert await blocker.read("nothing", 0, 100) == bytes(100)
    assert await blocker.read("nothing", 12345, 0) == b""
    assert not await blocker.exists("nothing")


async def test_read_existing_refuses_absent_objects(blocker: Blocker) -> None:
    """What a map references must exist: read_existing is NotFound, not zeros (issue 23)."""
    with pytest.raises(NotFound):
        await blocker.read_existing("nothing", 0, 100)
    with pytest.raises(NotFound):
        await blocker.read_existing("nothing", 0, 0)
    await blocker.write("short", 0, b"ab")
    assert await blocker.read_existing("short", 0, 4) == b"ab\0\0"  # short: zero-filled
    assert await blocker.read_existing("short", 10, 3) == bytes(3)


async def test_write_read_holes_and_short_reads(blocker: Blocker) -> None:
    await blocker.write("obj", 1000, b"abc")
    assert await blocker.size("obj") == 1003
    assert await blocker.exists("obj")
    # The hole before the data reads as zeros; past the end reads as zeros too.
    assert await blocker.read("obj", 0, 1010) == bytes(1000) + b"abc" + bytes(7)
    assert await blocker.read("obj", 5000, 4) == bytes(4)
    await blocker.write("obj", 0, b"XY", fua=True)
    await blocker.write("obj", 1001, b"Q")
    assert await blocker.read("obj", 0, 3) == b"XY\0"
    assert await blocker.read("obj", 999, 5) == b"\0aQc\0"
    assert await blocker.size("obj") == 1003


async def test_write_memoryview_and_large(blocker: Blocker) -> None:
    data = os.urandom(4 * 1024 * 1024 + 17)
    await blocker.write("big", 512, memoryview(data))
    assert await blocker.read("big", 512, len(data)) == data
    assert await blocker.read("big", 0, 512) == bytes(512)


async def test_put_replaces_whole_object(blocker: Blocker) -> None:
    await blocker.write("p", 0, b"0123456789")
    await blocker.put("p", b"short")
    assert await blocker.size("p") == 5
    assert await blocker.read("p", 0, 10) == b"short" + bytes(5)
    await blocker.put("empty", b"")
    assert await blocker.exists("empty")
    assert await blocker.size("empty") == 0


async def test_copy(blocker: Blocker) -> None:
    await blocker.write("src", 0, b"source-data")
    await blocker.put("dst", b"old destination content that is longer")
    await blocker.copy("src", "dst")
    assert await blocker.size("dst") == len(b"source-data")
    assert await blocker.read("dst", 0, 11) == b"source-data"
    # The copy is independent of its source.
    await blocker.write("src", 0, b"S")
    assert await blocker.read("dst", 0, 1) == b"s"
    await blocker.copy("src", "fresh", fua=True)
    assert await blocker.read("fresh", 0, 11) == b"Source-data"
    with pytest.raises(NotFound):
        await blocker.copy("missing", "other")
    assert not await blocker.exists("other")


async def test_delete(blocker: Blocker) -> None:
    await blocker.put("d", b"x")
    await blocker.delete("d")
    assert not await blocker.exists("d")
    assert await blocker.read("d", 0, 1) == b"\0"
    with pytest.raises(NotFound):
        await blocker.delete("d")
    with pytest.raises(NotFound):
        await blocker.size("d")


async def test_list_prefix_sorted_without_locks(blocker: Blocker) -> None:
    for name in ("vol-b", "vol-a", "map-1", "vol-c"):
        await blocker.put(name, name.encode())
    await blocker.lock("vol-lock", make_owner())
    assert await blocker.list("vol-") == ["vol-a", "vol-b", "vol-c"]
    assert await blocker.list() == ["map-1", "vol-a", "vol-b", "vol-c"]
    assert await blocker.list("zzz") == []
    await blocker.delete("vol-b")
    assert await blocker.list("vol") == ["vol-a", "vol-c"]
    await blocker.unlock("vol-lock", make_owner())


async def test_flush_and_reopen(make_blocker: Callable[..., Blocker]) -> None:
    first = make_blocker()
    await first.write("durable", 3, b"data")
    await first.put("whole", b"put-data", fua=False)
    await first.flush()
    second = make_blocker()
    assert await second.read("durable", 0, 8) == b"\0\0\0data\0"
    assert await second.read("whole", 0, 8) == b"put-data"


async def test_hash_stores_content_copy_and_dedups(blocker: Blocker) -> None:
    data = b"block content" + bytes(100)
    await blocker.put("a", data)
    await blocker.put("b", data.rstrip(b"\0"))
    name = await blocker.hash("a")
    assert name == block_hash(data) == block_hash(data.rstrip(b"\0"))
    # Stored without trailing zeros; reads zero-fill them back.
    assert await blocker.size(name) == len(data.rstrip(b"\0"))
    assert await blocker.read(name, 0, len(data)) == data
    assert await blocker.hash("b") == name
    assert (await blocker.list()).count(name) == 1
    # The source object is untouched.
    assert await blocker.read("a", 0, len(data)) == data


async def test_hash_of_zero_object_is_never_stored(blocker: Blocker) -> None:
    await blocker.write("zeros", 0, bytes(8192))
    await blocker.put("empty", b"")
    assert await blocker.hash("zeros") == ZERO_HASH
    assert await blocker.hash("empty") == ZERO_HASH
    assert not await blocker.exists(ZERO_HASH)
    with pytest.raises(NotFound):
        await blocker.hash("absent")


async def test_hash_of_multi_megabyte_object(blocker: Blocker) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5) + bytes(2 * 1024 * 1024)
    await blocker.write("m", 0, data)
    name = await blocker.hash("m")
    assert name == block_hash(data)
    assert await blocker.read(name, 0, len(data)) == data


async def test_concurrent_writers_to_different_objects(blocker: Blocker) -> None:
    payloads = {f"obj-{i}": os.urandom(1000 + i) for i in range(24)}
    await asyncio.gather(*(blocker.write(n, i * 7, d) for i, (n, d) in enumerate(payloads.items())))
    for i, (n, d) in enumerate(payloads.items()):
        assert await blocker.read(n, i * 7, len(d)) == d
    assert await blocker.list("obj-") == sorted(payloads)


async def test_concurrent_creators_of_one_object_keep_every_range(blocker: Blocker) -> None:
    chunks = [bytes([i + 1]) * 512 for i in range(8)]
    await asyncio.gather(*(blocker.write("shared", i * 512, c) for i, c in enumerate(chunks)))
    assert await blocker.read("shared", 0, 8 * 512) == b"".join(chunks)


async def test_lock_contention(make_blocker: Callable[..., Blocker]) -> None:
    a, b = make_blocker(), make_blocker()
    host = socket.gethostname()
    me, other = f"{host}:{os.getpid()}:a", f"{host}:{os.getpid()}:b"
    assert await a.lock_info("vol") is None
    await a.lock("vol", me)
    await a.lock("vol", me)  # re-taking one's own lock succeeds
    with pytest.raises(Locked):
        await b.lock("vol", other)
    with pytest.raises(Locked):
        await b.lock("vol", other, wait=True, timeout=0.2)
    with pytest.raises(Locked):
        await b.unlock("vol", other)
    info = await b.lock_info("vol")
    assert info is not None and info.owner == me and not info.stale

    async def release_soon() -> None:
        await asyncio.sleep(0.1)
        await a.unlock("vol", me)

    await asyncio.gather(release_soon(), b.lock("vol", other, wait=True, timeout=20))
    assert (await a.lock_info("vol")).owner == other  # type: ignore[union-attr]
    await b.unlock("vol", other)
    assert await a.lock_info("vol") is None
    await a.unlock("vol", me)  # unlocking a free lock is not an error


async def test_stale_lock_detection_and_force_break(blocker: Blocker) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=30)
    dead = f"{socket.gethostname()}:{int(proc.stdout)}:vm"
    await blocker.lock("vol-x", dead)
    info = await blocker.lock_info("vol-x")
    assert info is not None and info.stale and info.owner == dead
    live = make_owner("me")
    with pytest.raises(Locked):
        await blocker.lock("vol-x", live)  # stale locks are never broken implicitly
    await blocker.unlock("vol-x", live, force=True)
    await blocker.lock("vol-x", live)
    info = await blocker.lock_info("vol-x")
    assert info is not None and info.owner == live and not info.stale
    await blocker.unlock("vol-x", live)


BAD_NAMES = ["", "../etc", "a/b", ".hidden", "..", "x" * (MAX_NAME_LEN + 1), "sp ace", "nul\0"]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_names_are_invalid(blocker: Blocker, name: str) -> None:
    ops = [
        blocker.read(name, 0, 1), blocker.write(name, 0, b"x"), blocker.put(name, b"x"),
        blocker.copy(name, "ok"), blocker.copy("ok", name), blocker.delete(name),
        blocker.size(name), blocker.hash(name), blocker.lock(name, "o"),
        blocker.unlock(name, "o"), blocker.lock_info(name),
    ]
    for op in ops:
        with pytest.raises(InvalidArgument):
            await op
    assert await blocker.list() == []


@pytest.mark.parametrize(("offset", "size"), [
    (-1, 10), (0, -1), (0, MAX_IO_SIZE + 1), (MAX_OFFSET, 1), (1.5, 1),
])
async def test_bad_ranges_are_invalid(blocker: Blocker, offset: int, size: int) -> None:
    with pytest.raises(InvalidArgument):
        await blocker.read("obj", offset, size)
    # The same range as a write: data of that size (an impossible negative size is skipped).
    bad_offset = not isinstance(offset, int) or offset < 0 or offset >= MAX_OFFSET
    if bad_offset or size > MAX_IO_SIZE:
        with pytest.raises(InvalidArgument):
            await blocker.write("obj", offset, bytes(max(size, 1)))
    if size > MAX_IO_SIZE:
        with pytest.raises(InvalidArgument):
            await blocker.put("obj", bytes(size))
    assert not await blocker.exists("obj")


async def test_names_at_the_limit_work(blocker: Blocker) -> None:
    name = "n" * MAX_NAME_LEN
    await blocker.put(name, b"edge")
    assert await blocker.read(name, 0, 4) == b"edge"
    assert await blocker.list("nnn") == [name]


async def test_empty_write_creates_without_extending(blocker: Blocker) -> None:
    await blocker.write("e", 100, b"")
    assert await blocker.exists("e")
    assert await blocker.size("e") == 0
    await blocker.write("e", 0, b"ab")
    await blocker.write("e", 50, b"")
    assert await blocker.size("e") == 2
