"""Model-based test of the mapper: random operation sequences against plain bytearrays.

Invariants: every map reads back as its model (so snapshots and clones never change
when their parent is written), no live map names a missing object, and hashing a
snapshot gives the Pithos Merkle root of its bytes. close+reopen drops every cache.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BACKENDS, blocker_factory
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from mapper_helpers import KiB, MiB, missing_objects

from archipelago.blocker.base import Blocker
from archipelago.errors import AlreadyExists, InvalidArgument, NotFound
from archipelago.hashing import object_hash
from archipelago.mapper import Mapper, Volume

pytestmark = pytest.mark.timeout(120)

NAMES = ["a", "b", "c", "d", "e", "f"]
SMALL = 64 * KiB
PITHOS = 4 * MiB


@dataclass
class Model:
    """Expected contents of one map."""

    data: bytearray
    bs: int
    readonly: bool


def payload(seed: int, n: int, kind: str) -> bytes:
    """Deterministic data of one of three shapes."""
    if kind == "zero":
        return bytes(n)
    if kind == "byte":
        return bytes([seed % 255 + 1]) * n
    return random.Random(seed).randbytes(n)


class MapperMachine(RuleBasedStateMachine):
    """Drives one Mapper over one store; BACKEND is set by the parametrized test."""

    BACKEND = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        self.tmp = tempfile.mkdtemp(prefix="mapper-model-", dir=shm)
        self.factory = blocker_factory(self.BACKEND, Path(self.tmp))
        self.blockers: list[Blocker] = []
        self.mapper = self.new_mapper()
        self.model: dict[str, Model] = {}
        self.vols: dict[str, Volume] = {}

    def new_mapper(self) -> Mapper:
        b = self.factory(fsync=False) if self.BACKEND == "file" else self.factory()
        self.blockers.append(b)
        return Mapper(b, "modelhost:1:model")

    def run(self, coro):  # noqa: ANN001, ANN201 -- test glue
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.check_all_maps())
            self.run(self.mapper.close())
            for b in self.blockers:
                self.run(b.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def vol(self, name: str) -> Volume:
        if name not in self.vols:
            self.vols[name] = self.run(self.mapper.open(name))
        return self.vols[name]

    def close_vol(self, name: str) -> None:
        v = self.vols.pop(name, None)
        if v is not None:
            self.run(v.close())

    def pick(self, data: st.DataObject, writable: bool | None = None) -> str:
        names = sorted(n for n, m in self.model.items() if writable is None or m.readonly != writable)
        return data.draw(st.sampled_from(names))

    def has(self, writable: bool | None = None) -> bool:
        return any(writable is None or m.readonly != writable for m in self.model.values())

    def free_name(self, data: st.DataObject) -> str | None:
        free = [n for n in NAMES if n not in self.model]
        return data.draw(st.sampled_from(free)) if free else None

    # -- rules -----------------------------------------------------------------

    @rule(data=st.data(), name=st.sampled_from(NAMES), pithos=st.booleans(), nblocks=st.integers(0, 3))
    def create(self, data: st.DataObject, name: str, pithos: bool, nblocks: int) -> None:
        bs = PITHOS if pithos else SMALL
        size = max(0, nblocks * bs - data.draw(st.integers(0, 3) | st.integers(0, bs - 1)))
        if name in self.model:
            with pytest.raises(AlreadyExists):
                self.run(self.mapper.create(name, size, bs))
            return
        info = self.run(self.mapper.create(name, size, bs))
        assert (info.size, info.block_size, info.readonly) == (size, bs, False)
        self.model[name] = Model(bytearray(size), bs, False)

    @precondition(lambda self: self.has(writable=True))
    @rule(data=st.data(), seed=st.integers(0, 1 << 30), kind=st.sampled_from(["rand", "zero", "byte"]),
          fua=st.booleans())
    def write(self, data: st.DataObject, seed: int, kind: str, fua: bool) -> None:
        name = self.pick(data, writable=True)
        m = self.model[name]
        size = len(m.data)
        if data.draw(st.booleans()):  # block aligned (whole blocks)
            off = data.draw(st.integers(0, max(0, (size - 1) // m.bs))) * m.bs
        else:
            off = data.draw(st.integers(0, size))
        n = data.draw(st.integers(0, min(size - off, 2 * m.bs + 3)))
        if off < size and data.draw(st.booleans()):
            n = min(size - off, m.bs - off % m.bs)  # up to the block end
        buf = payload(seed, n, kind)
        self.run(self.vol(name).write(off, buf, fua=fua))
        m.data[off : off + n] = buf

    @precondition(lambda self: self.has(writable=True))
    @rule(data=st.data())
    def zero(self, data: st.DataObject) -> None:
        name = self.pick(data, writable=True)
        m = self.model[name]
        off = data.draw(st.integers(0, len(m.data)))
        n = data.draw(st.integers(0, len(m.data) - off))
        self.run(self.vol(name).zero(off, n))
        m.data[off : off + n] = bytes(n)

    @precondition(lambda self: self.has())
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        name = self.pick(data)
        m = self.model[name]
        off = data.draw(st.integers(0, len(m.data)))
        n = data.draw(st.integers(0, len(m.data) - off))
        assert self.run(self.vol(name).read(off, n)) == bytes(m.data[off : off + n])

    @precondition(lambda self: self.has(writable=True))
    @rule(data=st.data())
    def snapshot(self, data: st.DataObject) -> None:
        name = self.pick(data, writable=True)
        snap = self.free_name(data)
        if snap is None:
            return
        info = self.run(self.mapper.snapshot(name, snap))
        assert info.readonly and info.parent == name and info.kind == "snapshot"
        m = self.model[name]
        self.model[snap] = Model(bytearray(m.data), m.bs, True)

    @precondition(lambda self: self.has(writable=False))
    @rule(data=st.data(), extra=st.integers(0, 100_000))
    def clone(self, data: st.DataObject, extra: int) -> None:
        src = self.pick(data, writable=False)
        new = self.free_name(data)
        if new is None:
            return
        m = self.model[src]
        size = len(m.data) + extra if data.draw(st.booleans()) else None
        self.run(self.mapper.clone(src, new, size))
        self.model[new] = Model(bytearray(m.data) + bytearray(extra if size else 0), m.bs, False)

    @precondition(lambda self: self.has(writable=True))
    @rule(data=st.data())
    def clone_from_writable_fails(self, data: st.DataObject) -> None:
        with pytest.raises(InvalidArgument):
            self.run(self.mapper.clone(self.pick(data, writable=True), "zz"))

    @precondition(lambda self: any(m.readonly and m.bs == PITHOS for m in self.model.values()))
    @rule(data=st.data())
    def hash(self, data: st.DataObject) -> None:
        names = sorted(n for n, m in self.model.items() if m.readonly and m.bs == PITHOS)
        src = data.draw(st.sampled_from(names))
        m = self.model[src]
        root = object_hash(bytes(m.data))
        if root in self.model and self.model[root].data != m.data:
            return  # a different map already uses that name (not reachable in practice)
        info = self.run(self.mapper.hash(src))
        assert info.name == root and info.readonly and info.size == len(m.data)
        hashes, nbytes = self.run(self.mapper.hashmap(root))
        assert nbytes == len(m.data)
        self.model[root] = Model(bytearray(m.data), PITHOS, True)

    @precondition(lambda self: self.has(writable=True))
    @rule(data=st.data())
    def resize(self, data: st.DataObject) -> None:
        name = self.pick(data, writable=True)
        m = self.model[name]
        size = data.draw(st.integers(0, 3 * m.bs + 5))
        self.run(self.mapper.resize(name, size))
        if size < len(m.data):
            del m.data[size:]
        else:
            m.data.extend(bytes(size - len(m.data)))
        assert self.vol(name).info.size == size

    @precondition(lambda self: self.has())
    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        old = self.pick(data)
        new = self.free_name(data)
        if new is None:
            return
        self.close_vol(old)
        self.run(self.mapper.rename(old, new))
        self.model[new] = self.model.pop(old)
        with pytest.raises(NotFound):
            self.run(self.mapper.info(old))

    @precondition(lambda self: self.has())
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        name = self.pick(data)
        self.close_vol(name)
        self.run(self.mapper.remove(name))
        del self.model[name]
        with pytest.raises(NotFound):
            self.run(self.mapper.open(name))

    @rule()
    def reopen(self) -> None:
        self.run(self.mapper.close())
        self.vols.clear()
        self.mapper = self.new_mapper()

    @rule()
    def check_all(self) -> None:
        self.run(self.check_all_maps())

    # -- invariants ------------------------------------------------------------

    async def check_all_maps(self) -> None:
        listed = {vi.name: vi for vi in await self.mapper.list()}
        assert sorted(listed) == sorted(self.model)
        for name, m in self.model.items():
            assert (listed[name].size, listed[name].readonly) == (len(m.data), m.readonly)
            v = self.vols.get(name) or await self.mapper.open(name)
            assert await v.read(0, len(m.data)) == bytes(m.data), name
            exts = await v.extents(0, len(m.data))
            assert sum(e.length for e in exts) == len(m.data)
            for e in exts:
                if e.zero:
                    assert not any(m.data[e.offset : e.offset + e.length])
            if name not in self.vols:
                await v.close()

    @invariant()
    def nothing_referenced_is_missing(self) -> None:
        assert self.run(missing_objects(self.mapper)) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_mapper_model(backend: str) -> None:
    """Random operation sequences keep every map equal to its model."""
    if backend == "rados":
        from conftest import ceph_conf_or_skip

        ceph_conf_or_skip()

    class Machine(MapperMachine):
        BACKEND = backend

    examples = 120 if backend == "memory" else 30
    Machine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    Machine.TestCase().runTest()
