"""Crash safety of the mapper: cut the store after every k-th mutating operation.

A scripted workload runs once on a recording blocker. For every k the store a crash
would leave (every op up to k persisted, or -- strict -- only the durable ones) is
reopened by a fresh Mapper: every write acknowledged with FUA or followed by a flush
must read back, and no live map may name a missing object.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from mapper_helpers import KiB, MiB, RecordingBlocker, missing_objects

from archipelago.blocker.memory import MemoryBlocker, MemoryStore
from archipelago.errors import NotFound
from archipelago.hashing import object_hash
from archipelago.mapper import Mapper

pytestmark = pytest.mark.timeout(120)

BS = 64 * KiB
SIZE = 4 * BS + 1000

State = dict[str, bytes]


@dataclass
class Step:
    """One acknowledged workload step: its op range and the model after it."""

    label: str
    start: int
    end: int
    durable: bool
    state: State
    extra: list[State] = field(default_factory=list)


class Workload:
    """Runs operations on a recording store and keeps the expected contents."""

    def __init__(self) -> None:
        self.rb = RecordingBlocker()
        self.m = Mapper(self.rb, "host:1:crash")
        self.model: dict[str, bytearray] = {}
        self.steps: list[Step] = []
        self.rng = random.Random(7)

    def snap(self) -> State:
        return {k: bytes(v) for k, v in self.model.items()}

    async def step(
        self, label: str, durable: bool, fn: Callable[[], Awaitable[object]],
        update: Callable[[], None], extra: list[State] | None = None,
    ) -> None:
        start = len(self.rb.log)
        await fn()
        update()
        self.steps.append(Step(label, start, len(self.rb.log), durable, self.snap(), extra or []))

    async def write(self, name: str, off: int, data: bytes, fua: bool) -> None:
        v = await self.m.open(name)

        def upd() -> None:
            self.model[name][off : off + len(data)] = data

        await self.step(f"write {name} {off}+{len(data)} fua={fua}", fua,
                        lambda: v.write(off, data, fua=fua), upd)
        await v.close()

    async def flush(self, name: str) -> None:
        v = await self.m.open(name)
        await self.step("flush", True, v.flush, lambda: None)
        await v.close()

    def rand(self, n: int) -> bytes:
        return self.rng.randbytes(n)


async def run_workload() -> Workload:
    """The scripted workload (every kind of map update and copy-up)."""
    w = Workload()
    m = w.m

    def create(name: str, size: int) -> Callable[[], None]:
        return lambda: w.model.__setitem__(name, bytearray(size))

    await w.step("create v", True, lambda: m.create("v", SIZE, BS), create("v", SIZE))
    await w.write("v", 100, w.rand(5000), True)
    await w.write("v", BS, w.rand(BS), False)
    await w.flush("v")
    await w.step("snapshot", True, lambda: m.snapshot("v", "s"),
                 lambda: w.model.__setitem__("s", bytearray(w.model["v"])))
    await w.write("v", 200, w.rand(100), True)
    await w.write("v", BS + 10, w.rand(10), True)
    await w.write("v", 2 * BS - 50, w.rand(BS + 100), True)

    async def zero() -> None:
        v = await m.open("v")
        await v.zero(BS, BS, fua=True)
        await v.close()

    def zero_model() -> None:
        w.model["v"][BS : 2 * BS] = bytes(BS)

    await w.step("zero", True, zero, zero_model)
    await w.step("clone", True, lambda: m.clone("s", "c", SIZE + BS),
                 lambda: w.model.__setitem__("c", bytearray(w.model["s"]) + bytearray(BS)))
    await w.write("c", 0, w.rand(10), True)
    await w.write("v", 3 * BS, bytes(BS), True)
    await w.write("v", 4 * BS, w.rand(1000), True)
    small = 3 * BS + 7
    pre = bytearray(w.model["v"])
    pre[small:] = bytes(len(pre) - small)
    extra = {**w.snap(), "v": bytes(pre)}  # mid-shrink: tail already zeroed
    await w.step("shrink", True, lambda: m.resize("v", small),
                 lambda: w.model.__setitem__("v", w.model["v"][:small]), [extra])
    await w.step("grow", True, lambda: m.resize("v", SIZE),
                 lambda: w.model["v"].extend(bytes(SIZE - small)))
    await w.write("v", 0, w.rand(50), False)
    await w.flush("v")
    await w.step("remove s", True, lambda: m.remove("s"), lambda: w.model.pop("s"))
    await w.step("create p", True, lambda: m.create("p", 5 * MiB), create("p", 5 * MiB))
    await w.write("p", 3, w.rand(100), True)
    await w.write("p", 4 * MiB + 5, w.rand(100), True)
    await w.step("snapshot p", True, lambda: m.snapshot("p", "ps"),
                 lambda: w.model.__setitem__("ps", bytearray(w.model["p"])))
    root = object_hash(bytes(w.model["ps"]))
    await w.step("hash", True, lambda: m.hash("ps"),
                 lambda: w.model.__setitem__(root, bytearray(w.model["ps"])))
    await w.write("p", 10, w.rand(10), True)
    await w.step("rename", True, lambda: m.rename("c", "c2"),
                 lambda: w.model.__setitem__("c2", w.model.pop("c")))
    await w.write("c2", BS * 4 + 999, w.rand(3), True)
    await m.close()
    return w


def candidates(w: Workload, k: int) -> list[State]:
    """States a crash after k ops may legally show (last durable step .. running step)."""
    d = -1
    for i, s in enumerate(w.steps):
        if s.end <= k and s.durable:
            d = i
    out: list[State] = [{}] if d < 0 else [w.steps[d].state]
    for s in w.steps[d + 1 :]:
        if s.start < k:
            out += s.extra + [s.state]
    return out


async def check_crash(w: Workload, k: int, strict: bool) -> None:
    store = w.rb.crashed(MemoryStore(), k, strict)
    m = Mapper(MemoryBlocker(store), "host:2:after")
    cands = candidates(w, k)
    live = {vi.name: vi for vi in await m.list()}
    assert any(set(live) == set(c) for c in cands), (k, sorted(live))
    seen: dict[str, bytes] = {}
    for name, vi in live.items():
        sized = [c[name] for c in cands if name in c and len(c[name]) == vi.size]
        assert sized, (k, name, vi.size)
        v = await m.open(name)
        data = seen[name] = await v.read(0, vi.size)
        for b0 in range(0, vi.size, BS):
            got = data[b0 : b0 + BS]
            assert any(c[b0 : b0 + BS] == got for c in sized), (k, strict, name, b0)
        await v.close()
    assert await missing_objects(m) == [], k
    # The recovered maps stay independent: overwriting each writable one changes no other.
    for name, vi in live.items():
        if not vi.readonly:
            v = await m.open(name)
            await v.write(0, b"\xaa" * vi.size, fua=True)
            await v.close()
            seen[name] = b"\xaa" * vi.size
            for other in live:
                o = await m.open(other)
                assert await o.read(0, live[other].size) == seen[other], (k, name, other)
                await o.close()
    assert await missing_objects(m) == [], k
    await m.close()


async def test_every_crash_point_is_consistent() -> None:
    w = await run_workload()
    assert len(w.rb.log) > 40
    # The final state reads back fully.
    await check_crash(w, len(w.rb.log), strict=True)
    for k in range(len(w.rb.log) + 1):
        await check_crash(w, k, strict=False)
        await check_crash(w, k, strict=True)


async def test_unacknowledged_state_is_never_required() -> None:
    """Sanity of the harness: a crash before the first op shows no volume at all."""
    w = await run_workload()
    store = w.rb.crashed(MemoryStore(), 0, strict=True)
    m = Mapper(MemoryBlocker(store), "host:3:x")
    assert await m.list() == []
    with pytest.raises(NotFound):
        await m.open("v")
