"""The GC stress workload (tests/test_gc.py): collections in a loop while snapshots,
clones, writes with copy-up, zeroes, removals, imports and hashmap PUTs run, then every
map must read back its model, name no missing object, and a final ``--grace 0`` run
with nothing in flight must leave exactly the referenced objects. One workload and one
model for every backend; only the source of object ages differs (``TickAges`` for the
memory store, ``WallAges`` for real mtimes on file and RADOS)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from mapper_helpers import KiB, missing_objects, referenced_objects

from archipelago.blocker.base import Blocker
from archipelago.errors import AlreadyExists, InvalidArgument
from archipelago.hashing import BLOCK_SIZE as PITHOS_BS
from archipelago.hashing import block_hash
from archipelago.mapper import Mapper
from archipelago.mapper.format import chunk_name
from archipelago.upkeep.gc import collect

BS = 64 * KiB
SIZE = 8 * BS
#: Content blocks of imports and hashmap PUTs: few, so deduplication hits live blocks
#: and garbage alike (a removed map's blocks named again by a new one).
PAYLOADS = [bytes([i + 1]) * (1000 + 37 * i) + b"end" for i in range(48)]
Op = tuple[str, int, int, int]
OP_KINDS = ["write", "zero", "snapshot", "clone", "remove", "import", "hashmap_put",
            "interrupted_upload", "hash"]


async def expected_objects(m: Mapper) -> set[str]:
    """What must survive, computed without the GC code: every header, the chunks of live
    maps and every object their entries name (tests/mapper_helpers.py)."""
    out = set(await m.blocker.list("map:"))
    for vi in await m.list(internal=True):
        h = await m.live(vi.name)
        out.update(chunk_name(h.uid, c) for c in h.stored_chunks())
    for names in (await referenced_objects(m)).values():
        out.update(names)
    return out


async def check_model(m: Mapper, model: dict[str, bytes]) -> None:
    """Every map reads back its model and names no missing object."""
    for name, data in model.items():
        v = await m.open(name)
        assert await v.read(0, len(data)) == data, name
        await v.close()
    assert await missing_objects(m) == []


@dataclass
class TickAges:
    """Memory store: object ages come from a clock that ticks once per finished
    operation; the grace is two ticks, so only blocks written by the operation in flight
    (or the one just before) are young and everything older is swept at once."""

    ticks: list[float] = field(default_factory=lambda: [1000.0])
    grace: float = 2

    def store_clock(self) -> float:
        """The memory store's clock (object mtimes)."""
        return self.ticks[0]

    def begin(self) -> None:
        """An operation starts."""

    def end(self) -> None:
        """An operation finished."""
        self.ticks[0] += 1

    def now(self) -> float:
        """GC's clock."""
        return self.ticks[0]

    def quiet(self) -> float:
        """GC's clock once nothing is in flight: past every object's mtime."""
        self.ticks[0] += 1
        return self.ticks[0]


@dataclass
class WallAges:
    """Real backends: objects keep their real mtimes; GC's clock is the time the
    operation *before* the one in flight started, with a grace of the backend's mtime
    resolution. So blocks written by the last two operations are young and everything
    older is collected as soon as it is garbage, with no waiting for ages to pass."""

    grace: float  # mtime resolution: RADOS stats whole seconds, ext4 a jiffy
    starts: list[float] = field(default_factory=lambda: [time.time()])

    def begin(self) -> None:
        """An operation starts."""
        self.starts.append(time.time())

    def end(self) -> None:
        """An operation finished."""

    def now(self) -> float:
        """GC's clock."""
        return self.starts[-2] if len(self.starts) > 1 else self.starts[0]

    def quiet(self) -> float:
        """GC's clock once nothing is in flight."""
        return time.time() + self.grace


async def run_concurrent(ops: list[Op], b: Blocker, ages: TickAges | WallAges,
                         prefix: str = "") -> int:
    """GC in a loop while the workload runs ``ops`` on maps named ``prefix``...; then
    check everything. Returns how many objects the concurrent collections deleted."""
    m = Mapper(b, "gc-stress:1")
    model: dict[str, bytes] = {}
    await m.create(f"{prefix}v0", SIZE, block_size=BS)
    model[f"{prefix}v0"] = bytes(SIZE)
    readonly: set[str] = set()  # snapshots, hashmap PUTs, hashed snapshots
    stop = asyncio.Event()
    runs = deleted = 0

    async def gc_loop() -> None:
        nonlocal runs, deleted
        while not stop.is_set():
            rep = await collect(b, grace=ages.grace, roots=[], clock=ages.now)
            runs += 1
            deleted += rep.deleted
            await asyncio.sleep(0)

    async def content_map(n: int, k: int, blk: int, byte: int, record: bool = True) -> None:
        """An import (writable) or a hashmap PUT (read-only): upload the blocks the store
        lacks (a dedup hit touches the block), then record the map over them (unless the
        upload is interrupted: its blocks are garbage that later uploads may reuse)."""
        p = byte % len(PAYLOADS)
        blocks = [PAYLOADS[p]] if blk % 2 else [PAYLOADS[p], PAYLOADS[(p + 1) % len(PAYLOADS)]]
        hashes = [block_hash(d) for d in blocks]
        for hx, d in zip(hashes, blocks, strict=True):
            if not await b.touch(hx):
                await b.put(hx, d)
        if not record:
            return
        nbytes = (len(blocks) - 1) * PITHOS_BS + SIZE
        ro = (k + blk) % 2 == 0
        name = f"{prefix}h{n}" if ro else f"{prefix}i{n}"
        await m.clone_hashmap(name, hashes, nbytes, None, ro)
        if ro:
            readonly.add(name)
        data = b"".join(d + bytes(PITHOS_BS - len(d)) for d in blocks[:-1])
        model[name] = data + blocks[-1] + bytes(SIZE - len(blocks[-1]))

    async def workload() -> None:
        n = 0
        for op, k, blk, byte in ops:
            names = sorted(model)
            name = names[k % len(names)]
            writable = name not in readonly
            n += 1
            ages.begin()
            try:
                if op in ("write", "zero") and writable:
                    v = await m.open(name)  # partial blocks: copy-up in clones/snapshots
                    data = bytes([byte]) * (BS // 2) if op == "write" else bytes(BS // 2)
                    off = blk * BS + (BS // 4)
                    await (v.write(off, data) if op == "write" else v.zero(off, len(data)))
                    await v.close()
                    cur = bytearray(model[name])
                    cur[off : off + len(data)] = data
                    model[name] = bytes(cur)
                elif op == "snapshot" and writable:
                    await m.snapshot(name, f"{prefix}s{n}")
                    model[f"{prefix}s{n}"] = model[name]
                    readonly.add(f"{prefix}s{n}")
                elif op == "clone" and not writable:
                    await m.clone(name, f"{prefix}c{n}")
                    model[f"{prefix}c{n}"] = model[name]
                elif op == "remove" and len(model) > 1:
                    await m.remove(name)
                    del model[name]
                elif op in ("import", "hashmap_put"):
                    await content_map(n, k + (op == "import"), blk, byte)
                elif op == "hash" and not writable:  # content blocks of a snapshot
                    root = (await m.hash(name)).name
                    model[root] = model[name]
                    readonly.add(root)
                elif op == "interrupted_upload":
                    await content_map(n, k, blk, byte, record=False)
            except (AlreadyExists, InvalidArgument):
                pass
            ages.end()
            await asyncio.sleep(0)  # let the collector interleave
        stop.set()

    await asyncio.gather(gc_loop(), workload())
    assert runs >= 1
    await collect(b, grace=0, roots=[], clock=ages.quiet)
    await check_model(m, model)
    assert set(await b.list()) == await expected_objects(m)
    await m.close()
    return deleted
