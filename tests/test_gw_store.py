"""The gateway block layer against a bytearray model (small blocks, random operations)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from hypothesis import given, settings
from hypothesis import strategies as st

from archipelago.blocker.memory import MemoryBlocker
from archipelago.hashing import ZERO_HASH, object_hashmap
from pithos_gw.store import BlockStore

BS = 16


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read_all(store: BlockStore, hashes: list[str], size: int) -> bytes:
    return b"".join([d async for d in store.read_range(hashes, size, 0, size)])


op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 80), st.binary(max_size=50)),
    st.tuples(st.just("zeros"), st.integers(0, 80), st.integers(1, 40)),
    st.tuples(st.just("truncate"), st.integers(0, 100), st.just(b"")),
)


@settings(max_examples=150, deadline=None)
@given(initial=st.binary(max_size=70), ops=st.lists(op, max_size=8),
       chunk=st.integers(1, 20))
def test_ingest_rewrite_truncate_match_model(initial: bytes, ops: list[tuple[str, int, object]],
                                             chunk: int) -> None:
    async def run() -> None:
        store = BlockStore(MemoryBlocker(), block_size=BS)
        got = await store.ingest(chunks_of(initial, chunk))
        assert got.md5 == hashlib.md5(initial).hexdigest()
        assert got.hashes == object_hashmap(initial, BS) and got.size == len(initial)
        model = bytearray(initial)
        hashes, size = got.hashes, got.size
        for kind, at, arg in ops:
            if kind == "truncate":
                hashes = await store.truncate(hashes, size, at)
                size = at
                model = model[:at] + bytes(max(0, at - len(model)))
                continue
            data = arg if isinstance(arg, bytes) else bytes(arg)  # type: ignore[arg-type]
            at = min(at, size)  # offsets beyond the end are refused (416 above)
            hashes, size = await store.rewrite(hashes, size, at, chunks_of(data, chunk),
                                               len(data))
            model[at : at + len(data)] = data
        assert size == len(model)
        assert hashes == object_hashmap(bytes(model), BS)
        assert await read_all(store, hashes, size) == bytes(model)
        assert await store.md5_of(hashes, size) == hashlib.md5(model).hexdigest()
        # Nothing but content-named, non-zero blocks is ever stored.
        for name in await store.blocker.list():
            assert name != ZERO_HASH
            stored = await store.blocker.read(name, 0, BS)
            assert hashlib.sha256(stored.rstrip(b"\0")).hexdigest() == name

    asyncio.run(run())


def test_missing_reports_each_absent_block_once() -> None:
    async def run() -> None:
        store = BlockStore(MemoryBlocker(), block_size=BS)
        a = await store.put_block(b"a" * BS)
        b = hashlib.sha256(b"b").hexdigest()
        assert await store.missing([a, b, ZERO_HASH, b]) == [b]

    asyncio.run(run())


@settings(max_examples=25, deadline=None)
@given(size=st.integers(0, 5 * 128 * 1024 + 77), chunk=st.integers(1000, 300_000),
       seed=st.integers(0, 255))
def test_ingest_of_large_blocks_keeps_md5_order_and_map(size: int, chunk: int, seed: int) -> None:
    """Blocks above the inline-hash size go through the threaded, pipelined path: the MD5
    still sees the bytes in order and the map names every block."""
    bs = 128 * 1024
    data = bytes((i * 7 + seed) % 251 for i in range(size))

    async def run() -> None:
        store = BlockStore(MemoryBlocker(), block_size=bs)
        got = await store.ingest(chunks_of(data, chunk))
        assert got.size == size and got.md5 == hashlib.md5(data).hexdigest()
        assert got.hashes == object_hashmap(data, bs)
        assert await read_all(store, got.hashes, size) == data

    asyncio.run(run())
