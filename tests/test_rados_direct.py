"""The RADOS blocker's zero-copy data path (archipelago/blocker/rados_direct.py).

Writes and puts from writable buffers (segment memoryviews, bytearrays) and
``read_into`` go through librados via ctypes on python3-rados' own ioctx; these tests
check that the path is really taken on the installed python3-rados (the layout check
passed) and that it reads back what python3-rados itself stores, including holes,
short and absent objects, and an ioctx namespace isolation.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

rados = pytest.importorskip("rados", reason="python3-rados is not installed")

from archipelago.blocker.rados import RadosBlocker  # noqa: E402
from archipelago.blocker.rados_direct import direct_io  # noqa: E402

pytestmark = [pytest.mark.rados, pytest.mark.timeout(120)]
POOL = "archipelago-test"
MiB = 1024 * 1024


@pytest.fixture
async def blk() -> AsyncIterator[RadosBlocker]:
    """A connected RadosBlocker in a fresh namespace (emptied afterwards)."""
    conf = os.environ.get("ARCHIPELAGO_CEPH_CONF")
    if not conf:
        pytest.skip("ARCHIPELAGO_CEPH_CONF is unset: no Ceph cluster")
    b = RadosBlocker(conf, POOL, f"d-{uuid.uuid4().hex}")
    await b.open()
    yield b
    for name in await b.list():
        await b.delete(name)
    await b.close()


async def test_direct_path_is_active(blk: RadosBlocker) -> None:
    assert blk._direct is not None, "layout check refused python3-rados' Ioctx"


async def test_direct_refuses_a_foreign_object(blk: RadosBlocker) -> None:
    # the word before the ioctx must be the Rados object given: here it is not
    assert direct_io(object(), blk._io, blk._io.get_pool_id(), blk.namespace) is None
    assert direct_io(blk._cluster, blk._io, blk._io.get_pool_id() + 1, blk.namespace) is None
    assert direct_io(blk._cluster, blk._io, blk._io.get_pool_id(), "other-ns") is None


async def test_write_put_read_into_roundtrip(blk: RadosBlocker) -> None:
    data = bytearray(os.urandom(4 * MiB))
    await blk.write("a", 100, memoryview(data))
    assert await blk.read("a", 100, 4 * MiB) == bytes(data)  # python3-rados read
    assert await blk.read("a", 0, 100) == bytes(100)
    buf = bytearray(b"\xff" * (5 * MiB))
    await blk.read_into("a", 0, memoryview(buf))
    assert buf[:100] == bytes(100)
    assert buf[100 : 100 + 4 * MiB] == data
    assert buf[100 + 4 * MiB :] == bytes(len(buf) - 100 - 4 * MiB)  # past the end: zeros
    await blk.put("b", memoryview(data)[:12345])
    assert await blk.size("b") == 12345
    assert await blk.read("b", 0, 12345) == bytes(data[:12345])
    await blk.put("b", bytearray(b"xy"))  # write_full replaces, never keeps a tail
    assert await blk.size("b") == 2


async def test_read_into_absent_object_is_zeros(blk: RadosBlocker) -> None:
    buf = bytearray(b"x" * 4096)
    await blk.read_into("nothing-here", 0, memoryview(buf))
    assert buf == bytes(4096)


async def test_many_concurrent(blk: RadosBlocker) -> None:
    blocks = [bytearray(os.urandom(MiB)) for _ in range(24)]
    await asyncio.gather(*(blk.write(f"o{i}", 0, memoryview(b)) for i, b in enumerate(blocks)))
    outs = [bytearray(MiB) for _ in blocks]
    await asyncio.gather(*(blk.read_into(f"o{i}", 0, memoryview(o)) for i, o in enumerate(outs)))
    assert outs == blocks
