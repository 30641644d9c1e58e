"""The mapper's usage op: used, owned, shared and distinct blocks of a map (what the web
UI shows per volume; tests/test_ui_browser.py reads it through the daemon)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from mapper_helpers import KiB, MiB

from archipelago.blocker.base import Blocker
from archipelago.errors import InvalidArgument, NotFound
from archipelago.hashing import ZERO_HASH, block_hash
from archipelago.mapper import Mapper
from archipelago.mapper.usage import usage

pytestmark = pytest.mark.timeout(60)
BS = 64 * KiB


async def test_usage_counts_owned_shared_and_duplicates(make_blocker: Callable[..., Blocker]) -> None:
    m = Mapper(make_blocker(), "h:1:a")
    await m.create("v", 8 * BS, BS)
    assert await usage(m, "v") == {
        "name": "v", "blocks": 8, "zero": 8, "content": 0, "objects": 0, "used": 0, "owned": 0,
        "shared": 0, "distinct": 0, "block_size": BS, "used_bytes": 0}
    v = await m.open("v")
    await v.write(0, b"A" * (3 * BS), fua=True)          # three blocks of its own
    u = await usage(m, "v")                               # open here: the cache's entries
    assert (u["used"], u["owned"], u["shared"], u["zero"]) == (3, 3, 0, 5)
    await v.close()
    await m.snapshot("v", "s")
    await m.clone("s", "c")
    c = await m.open("c")
    await c.write(BS, b"c")                               # copy-up of one shared block
    await c.close()
    uc = await usage(m, "c")
    assert (uc["used"], uc["owned"], uc["shared"], uc["distinct"]) == (3, 1, 2, 3)
    us = await usage(m, "s")
    assert (us["used"], us["owned"], us["shared"]) == (3, 0, 3)   # a snapshot owns nothing
    # content blocks: the same block twice is one distinct block (dedup ratio 2)
    data = os.urandom(4 * MiB)
    h = block_hash(data)
    await m.blocker.put(h, data)
    await m.clone_hashmap("img", [h, h, ZERO_HASH], 12 * MiB)
    ui = await usage(m, "img")
    assert (ui["content"], ui["distinct"], ui["zero"], ui["used_bytes"]) == (2, 1, 1, 8 * MiB)
    with pytest.raises(NotFound):
        await usage(m, "nope")
    with pytest.raises(InvalidArgument):
        await usage(m, "../x")
    await m.close()
