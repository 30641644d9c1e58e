"""Bad input to the mapper: the right error class, and nothing modified on the store."""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable

import pytest
import xxhash
from mapper_helpers import KiB, MiB

from archipelago.blocker.base import Blocker
from archipelago.errors import (
    AlreadyExists,
    Corrupt,
    Fenced,
    InvalidArgument,
    Locked,
    NotFound,
    ReadOnly,
)
from archipelago.hashing import ZERO_HASH
from archipelago.mapper import Mapper
from archipelago.mapper.format import chunk_name, header_name

pytestmark = pytest.mark.timeout(60)
BS = 64 * KiB


async def dump(b: Blocker) -> dict[str, bytes]:
    """Every object of the store with its content."""
    return {n: await b.read(n, 0, await b.size(n)) for n in await b.list()}


@pytest.fixture
async def env(make_blocker: Callable[..., Blocker]) -> tuple[Blocker, Mapper]:
    """A store holding volume v (with data), its snapshot s and a clone c."""
    b = make_blocker()
    m = Mapper(b, "testhost:1:a")
    await m.create("v", 4 * BS, BS)
    v = await m.open("v")
    await v.write(10, b"hello" * 1000, fua=True)
    await m.snapshot("v", "s")
    await m.clone("s", "c")
    await v.close()
    return b, m


async def expect(b: Blocker, exc: type[Exception], coro: object) -> None:
    """Await coro, expect exc, and check the store did not change."""
    before = await dump(b)
    with pytest.raises(exc):
        await coro  # type: ignore[misc]
    assert await dump(b) == before


async def test_unknown_volume(env: tuple[Blocker, Mapper]) -> None:
    b, m = env
    for coro in (
        m.open("nope"),
        m.info("nope"),
        m.remove("nope"),
        m.snapshot("nope", "x"),
        m.clone("nope", "x"),
        m.resize("nope", BS),
        m.rename("nope", "x"),
        m.hash("nope"),
        m.hashmap("nope"),
        m.lock("nope"),
    ):
        await expect(b, NotFound, coro)


async def test_duplicate_names(env: tuple[Blocker, Mapper]) -> None:
    b, m = env
    await expect(b, AlreadyExists, m.create("v", BS))
    await expect(b, AlreadyExists, m.create("s", BS))
    await expect(b, AlreadyExists, m.snapshot("v", "c"))
    await expect(b, AlreadyExists, m.clone("s", "v"))
    await expect(b, AlreadyExists, m.rename("v", "s"))
    await expect(b, AlreadyExists, m.rename("v", "v"))


async def test_bad_arguments(env: tuple[Blocker, Mapper]) -> None:
    b, m = env
    await expect(b, InvalidArgument, m.clone("v", "x"))  # writable source
    await expect(b, InvalidArgument, m.clone("s", "x", 3 * BS))  # smaller than source
    await expect(b, InvalidArgument, m.resize("v", -1))
    for bs in (100_000, 32 * KiB, 8 * MiB, 0, 3 * 64 * KiB):
        await expect(b, InvalidArgument, m.create("x", BS, bs))
    for name in ("", ".hidden", "a/b", "x" * 90, "a:b", "a b", "..", "map:v"):
        await expect(b, InvalidArgument, m.create(name, BS, BS))
    await expect(b, InvalidArgument, m.create("x", -5, BS))
    await expect(b, InvalidArgument, m.snapshot("s", "x"))  # read-only source
    await expect(b, InvalidArgument, m.hash("v"))  # writable
    await expect(b, InvalidArgument, m.hash("s"))  # 64 KiB blocks are not Pithos blocks
    await expect(b, InvalidArgument, m.hashmap("s"))
    await expect(b, ReadOnly, m.resize("s", 8 * BS))


async def test_io_past_end_and_read_only(env: tuple[Blocker, Mapper]) -> None:
    b, m = env
    v = await m.open("v")
    s = await m.open("s")
    await expect(b, InvalidArgument, v.write(4 * BS - 1, b"ab"))
    await expect(b, InvalidArgument, v.read(4 * BS, 1))
    await expect(b, InvalidArgument, v.read(-1, 1))
    await expect(b, InvalidArgument, v.zero(0, 4 * BS + 1))
    await expect(b, InvalidArgument, v.extents(1, 4 * BS))
    await expect(b, ReadOnly, s.write(0, b"x"))
    await expect(b, ReadOnly, s.zero(0, BS))
    await v.close()
    await expect(b, InvalidArgument, v.read(0, 1))  # closed
    await s.close()


async def test_clone_hashmap_errors(env: tuple[Blocker, Mapper]) -> None:
    b, m = env
    h = "ab" * 32
    await expect(b, NotFound, m.clone_hashmap("x", [h], 10))  # block not stored
    await expect(b, InvalidArgument, m.clone_hashmap("x", [ZERO_HASH], 5 * MiB))  # too few
    await expect(b, InvalidArgument, m.clone_hashmap("x", ["xyz"], 10))
    await expect(b, InvalidArgument, m.clone_hashmap("x", [ZERO_HASH], 10, size=5))
    await expect(b, InvalidArgument, m.clone_hashmap("x", [ZERO_HASH], 10, size=20, readonly=True))
    await expect(b, AlreadyExists, m.clone_hashmap("v", [ZERO_HASH], 10))


async def test_locked_by_another_owner(
    env: tuple[Blocker, Mapper], make_blocker: Callable[..., Blocker]
) -> None:
    b, m = env
    v = await m.open("v")
    other = Mapper(make_blocker(), "otherhost:2:b")
    await expect(b, Locked, other.open("v"))
    await expect(b, Locked, other.snapshot("v", "x"))
    await expect(b, Locked, other.resize("v", BS))
    await expect(b, Locked, other.remove("v"))
    await expect(b, Locked, other.rename("v", "x"))
    info = await other.info("v")
    assert info.lock_owner == "testhost:1:a" and not info.lock_stale
    v2 = await other.open("v", force=True)  # breaks the lock
    assert (await other.info("v")).lock_owner == "otherhost:2:b"
    with pytest.raises(Fenced):  # the old owner can no longer change the map
        await v.write(3 * BS, b"x")
    with pytest.raises(Locked):
        await v.flush()
    await v2.write(3 * BS, b"y", fua=True)
    await v2.close()
    await v.close()  # our lock was broken: closing must not fail
    await other.close()


async def test_stale_lock_is_reported(
    env: tuple[Blocker, Mapper], make_blocker: Callable[..., Blocker]
) -> None:
    b, m = env
    dead = Mapper(make_blocker(), f"{os.uname().nodename}:{_dead_pid()}")
    await dead.open("v")
    info = await m.info("v")
    assert info.lock_stale
    await expect(b, Locked, m.open("v"))
    v = await m.open("v", force=True)
    await v.close()


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.parametrize(
    "damage",
    ["magic", "format", "checksum", "truncated", "empty", "garbage-body"],
)
async def test_corrupt_header(env: tuple[Blocker, Mapper], damage: str) -> None:
    b, m = env
    hn = header_name("c")
    data = bytearray(await b.read(hn, 0, await b.size(hn)))
    if damage == "magic":
        data[0:4] = b"XXXX"
    elif damage == "format":
        data[5] = 9
    elif damage == "checksum":
        data[-1] ^= 0x55
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        data[24:] = b"\x01" * (len(data) - 24)
    await b.put(hn, bytes(data))
    for coro in (m.open("c"), m.info("c"), m.clone("c", "x"), m.remove("c"), m.rename("c", "y")):
        await expect(b, Corrupt, coro)
    names = [vi.name for vi in await m.list()]
    assert names == ["s", "v"]  # the corrupt map is skipped, the rest still listed


@pytest.mark.parametrize("damage", ["truncated", "checksum", "missing", "index", "kind"])
async def test_corrupt_entries(env: tuple[Blocker, Mapper], damage: str) -> None:
    b, m = env
    h = await m.live("s")
    cn = chunk_name(h.uid, 0)
    data = bytearray(await b.read(cn, 0, await b.size(cn)))
    if damage == "truncated":
        await b.put(cn, bytes(data[:-1]))
    elif damage == "checksum":
        data[8 + 33 * 4095 + 5] ^= 1
        await b.put(cn, bytes(data))
    elif damage == "missing":
        await b.delete(cn)
    elif damage == "index":
        other = await b.read(cn, 0, len(data))
        await b.put(cn, other[:4] + b"\0\0\0\1" + other[8:])
    else:
        data[8] = 7
        entries = bytes(data[8 : 8 + 33 * 4096])
        data[-20:-4] = xxhash.xxh3_128_digest(struct.pack(">I", 0) + entries)
        await b.put(cn, bytes(data))
    s = await m.open("s")
    await expect(b, Corrupt, s.read(0, 10))
    await expect(b, Corrupt, m.clone("s", "x"))
    await s.close()


async def test_header_replaced_between_size_and_read(env: tuple[Blocker, Mapper]) -> None:
    """A header replaced by a longer one between its size and its read reads torn: it is
    read again instead of reported Corrupt; damage that stays is still Corrupt. Every
    header reader (open, GC's marking, fencing) goes through load_header."""
    from archipelago.mapper.header_io import load_header

    b, m = env
    hn = header_name("v")
    before = await b.read(hn, 0, await b.size(hn))
    size = (await m.live("v")).size
    await m.resize("v", size + 2**32)  # another header of the same map, a longer one
    grown = await b.read(hn, 0, await b.size(hn))
    assert len(grown) != len(before)
    await b.put(hn, before)
    real_size = b.size
    swaps = [grown]

    async def size_then_replace(name: str) -> int:
        n = await real_size(name)
        if name == hn and swaps:
            await b.put(hn, swaps.pop())  # lands between size() and read()
        return n

    b.size = size_then_replace  # type: ignore[method-assign]
    h = await load_header(b, "v")
    assert not swaps and h is not None and h.size == size + 2**32
    await b.put(hn, bytes(grown) + b"x")  # damage that stays
    with pytest.raises(Corrupt):
        await load_header(b, "v")
    assert await load_header(b, "nope") is None
