"""Descriptor pool and buffer arena: allocations never overlap, frees and reclaims never leak."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from archipelago.errors import ConfigError, Corrupt, NotRunning
from archipelago.peers.segment import NONE, Segment, SegmentConfig

CFG = SegmentConfig(nr_ports=4, nr_static=2, nr_desc=16,
                    classes=((4096, 6), (65536, 3), (1 << 20, 2)))
DESC_TAG = 0x80000000


class ArenaMachine(RuleBasedStateMachine):
    """Random alloc / attach / free / reclaim against a model of live buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.seg = Segment.create(f"archip-test-arena-{uuid.uuid4().hex[:8]}", CFG)
        self.lib, self.base = self.seg.lib, self.seg.base
        self.bufs: dict[int, tuple[int, int, int]] = {}  # handle -> (offset, capacity, owner)
        self.descs: dict[int, tuple[int, int | None]] = {}  # idx -> (owner, handle)

    @rule(size=st.integers(0, 1 << 20), owner=st.integers(0, 3))
    def alloc(self, size: int, owner: int) -> None:
        h = self.lib.ap_buf_alloc(self.base, size, owner)
        if h < 0:
            free = self.seg.free_buffers()
            fits = [f for f, (s, _) in zip(free, CFG.classes, strict=True) if s >= size]
            assert sum(fits) == 0, "allocation failed while a fitting buffer was free"
            return
        off, cap = self.lib.ap_buf_offset(self.base, h), self.lib.ap_buf_capacity(self.base, h)
        assert cap >= size
        for o, c, _ in self.bufs.values():
            assert off + cap <= o or o + c <= off, "overlapping buffers"
        self.bufs[h] = (off, cap, owner)

    @precondition(lambda self: self.bufs)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        h = data.draw(st.sampled_from(sorted(self.bufs)))
        owner = self.bufs.pop(h)[2]
        assert self.lib.ap_buf_free(self.base, h, owner) == 0
        assert self.lib.ap_buf_free(self.base, h, owner) != 0, "double free accepted"

    @rule(owner=st.integers(0, 3))
    def desc_alloc(self, owner: int) -> None:
        idx = self.lib.ap_desc_alloc(self.base, owner)
        if idx < 0:
            assert len(self.descs) == CFG.nr_desc
            return
        assert idx not in self.descs
        self.descs[idx] = (owner, None)

    @precondition(lambda self: any(h is None for _, h in self.descs.values()) and self.bufs)
    @rule(data=st.data())
    def attach(self, data: st.DataObject) -> None:
        idx = data.draw(st.sampled_from(sorted(i for i, (_, h) in self.descs.items() if h is None)))
        h = data.draw(st.sampled_from(sorted(self.bufs)))
        assert self.lib.ap_desc_attach(self.base, idx, h) == 0
        self.bufs.pop(h)
        self.descs[idx] = (self.descs[idx][0], h)

    @precondition(lambda self: self.descs)
    @rule(data=st.data())
    def desc_free(self, data: st.DataObject) -> None:
        idx = data.draw(st.sampled_from(sorted(self.descs)))
        assert self.lib.ap_desc_free(self.base, idx, 1) == 0
        del self.descs[idx]
        assert self.seg.desc(idx).buf_handle == NONE

    @rule(port=st.integers(0, 3))
    def reclaim(self, port: int) -> None:
        self.lib.ap_port_reclaim(self.base, port, self.seg.ffi.NULL, 0)
        self.descs = {i: v for i, v in self.descs.items() if v[0] != port}
        self.bufs = {h: v for h, v in self.bufs.items() if v[2] != port}

    @invariant()
    def counts_match(self) -> None:
        attached = sum(1 for _, h in self.descs.values() if h is not None)
        assert self.seg.free_descs() == CFG.nr_desc - len(self.descs)
        live = sum(c for _, c in CFG.classes) - sum(self.seg.free_buffers())
        assert live == len(self.bufs) + attached, "leaked or double-freed buffer"

    def teardown(self) -> None:
        for idx in list(self.descs):
            self.lib.ap_desc_free(self.base, idx, 1)
        for h, (_, _, owner) in self.bufs.items():
            self.lib.ap_buf_free(self.base, h, owner)
        assert self.seg.is_full()
        self.seg.close()
        self.seg.unlink()


TestArena = ArenaMachine.TestCase
TestArena.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_segment_file_mode_and_join() -> None:
    import os
    import stat

    seg = Segment.create(f"archip-test-{uuid.uuid4().hex[:8]}", CFG)
    try:
        assert stat.S_IMODE(os.stat(seg.path).st_mode) == 0o600
        other = Segment.join(seg.path)
        assert other.nr_desc == CFG.nr_desc and other.class_sizes() == list(CFG.classes)
        other.close()
        seg.hdr.version = 99  # a daemon of another format version
        with pytest.raises(ConfigError, match="format version 99"):
            Segment.join(seg.path)
        seg.hdr.magic = 0
        with pytest.raises(Corrupt):
            Segment.join(seg.path)
    finally:
        seg.close()
        seg.unlink()
    with pytest.raises(NotRunning):
        Segment.join(seg.path)


def test_buffers_are_reused_last_freed_first() -> None:
    """The arena hands out the most recently freed buffer: a load with at most k buffers
    in flight touches k buffers of a class, never the whole arena (whose untouched pages
    the segment never commits)."""
    seg = Segment.create(f"archip-test-lifo-{uuid.uuid4().hex[:8]}",
                         SegmentConfig(nr_ports=4, nr_static=2, nr_desc=16,
                                       classes=((4096, 64),)))
    lib, base = seg.lib, seg.base
    try:
        seen = set()
        for _ in range(200):  # two in flight at a time, freed in either order
            a, b = lib.ap_buf_alloc(base, 4096, 1), lib.ap_buf_alloc(base, 4096, 1)
            seen |= {a, b}
            assert lib.ap_buf_free(base, b, 1) == 0 and lib.ap_buf_free(base, a, 1) == 0
            assert lib.ap_buf_alloc(base, 4096, 1) == a  # last freed, first out
            assert lib.ap_buf_free(base, a, 1) == 0
        assert len(seen) == 2
        assert seg.is_full()
        held = [lib.ap_buf_alloc(base, 4096, 1) for _ in range(64)]
        assert sorted(held) == list(range(64)) and lib.ap_buf_alloc(base, 4096, 1) < 0
    finally:
        seg.close()
        seg.unlink()
