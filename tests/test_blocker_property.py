"""Property: any sequence of writes, puts, copies, deletes and hashes gives identical
reads, sizes and listings on the file and memory backends."""

from __future__ import annotations

import asyncio
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archipelago.blocker.base import Blocker
from archipelago.blocker.file import FileBlocker
from archipelago.blocker.memory import MemoryBlocker
from archipelago.errors import NotFound

NAMES = st.sampled_from(["a", "b", "c"])
OFFSETS = st.integers(min_value=0, max_value=9000)
DATA = st.one_of(st.binary(max_size=3000), st.integers(0, 3000).map(bytes))

OPS = st.one_of(
    st.tuples(st.just("write"), NAMES, OFFSETS, DATA, st.booleans()),
    st.tuples(st.just("put"), NAMES, DATA),
    st.tuples(st.just("copy"), NAMES, NAMES),
    st.tuples(st.just("delete"), NAMES),
    st.tuples(st.just("hash"), NAMES),
    st.tuples(st.just("flush"),),
)


async def _apply(b: Blocker, op: tuple) -> object:
    """Run one op; NotFound is an outcome too (both backends must agree on it)."""
    kind, *args = op
    try:
        if kind == "write":
            name, off, data, fua = args
            await b.write(name, off, data, fua=fua)
        elif kind == "put":
            await b.put(args[0], args[1])
        elif kind == "copy":
            await b.copy(args[0], args[1])
        elif kind == "delete":
            await b.delete(args[0])
        elif kind == "hash":
            return await b.hash(args[0])
        else:
            await b.flush()
    except NotFound:
        return "not-found"
    return None


async def _snapshot(b: Blocker) -> dict[str, bytes]:
    names = await b.list()
    return {n: await b.read(n, 0, await b.size(n) + 7) for n in names}


async def _compare(ops: list[tuple], read_at: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        mem: Blocker = MemoryBlocker()
        fil: Blocker = FileBlocker(d, fsync=False)
        try:
            for op in ops:
                assert await _apply(mem, op) == await _apply(fil, op), op
            assert await _snapshot(mem) == await _snapshot(fil)
            for name, off, size in read_at:
                assert await mem.read(name, off, size) == await fil.read(name, off, size)
            reopened = FileBlocker(d, fsync=False)
            try:
                assert await _snapshot(reopened) == await _snapshot(mem)
            finally:
                await reopened.close()
        finally:
            await fil.close()


@pytest.mark.timeout(120)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, max_size=25),
       read_at=st.lists(st.tuples(NAMES, OFFSETS, st.integers(0, 5000)), max_size=5))
def test_file_and_memory_backends_agree(ops: list[tuple], read_at: list[tuple[str, int, int]]) -> None:
    asyncio.run(_compare(ops, read_at))
