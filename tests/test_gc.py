"""Garbage collection (archipelago/upkeep/gc.py, docs/gc.md): exactly the referenced
objects survive; nothing referenced is ever deleted, also while snapshots, clones,
writes and removals run concurrently (hypothesis), and a collection killed mid-sweep
loses nothing (the next one finishes the job)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from gc_workload import (
    BS,
    OP_KINDS,
    SIZE,
    Op,
    TickAges,
    WallAges,
    check_model,
    expected_objects,
    run_concurrent,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archipelago.blocker.base import Blocker
from archipelago.blocker.memory import MemoryBlocker, MemoryStore
from archipelago.errors import InvalidArgument, NotFound
from archipelago.mapper import Mapper
from archipelago.mapper.format import chunk_name
from archipelago.upkeep.gc import collect, parse_duration

pytestmark = pytest.mark.timeout(300)



async def scenario(m: Mapper) -> dict[str, bytes]:
    """Create, write, snapshot, clone, overwrite, zero, resize and remove; the model."""
    model: dict[str, bytes] = {}

    async def write(name: str, off: int, data: bytes) -> None:
        v = await m.open(name)
        await v.write(off, data)
        await v.close()
        cur = bytearray(model[name])
        cur[off : off + len(data)] = data
        model[name] = bytes(cur)

    for n in ("a", "b", "gone"):
        await m.create(n, SIZE, block_size=BS)
        model[n] = bytes(SIZE)
    await write("a", 0, b"\x01" * (3 * BS))
    await write("b", BS // 2, b"\x02" * (2 * BS))
    await write("gone", 0, b"\x03" * SIZE)
    await m.snapshot("a", "a.s1")
    model["a.s1"] = model["a"]
    await m.clone("a.s1", "c")
    model["c"] = model["a"]
    await write("a", 100, b"\x04" * (BS + 7))  # copies up: the old blocks stay for a@1
    await write("c", 0, b"\x05" * (4 * BS))  # overwrites shared blocks in the clone
    await m.snapshot("c", "c.s1")
    model["c.s1"] = model["c"]
    await write("c", 5 * BS, b"\x06" * BS)
    v = await m.open("b")
    await v.zero(0, 2 * BS)  # deletes owned blocks
    await v.close()
    model["b"] = bytes(2 * BS) + model["b"][2 * BS :]
    await m.snapshot("gone", "gone.s1")
    await m.remove("gone")  # its old blocks live on in gone.s1...
    del model["gone"]
    await m.clone("gone.s1", "kept")
    await m.remove("gone.s1")  # ...and then only in the clone
    model["kept"] = b"\x03" * SIZE
    await m.snapshot("a", "tmp")
    await m.remove("a.s1")  # a's pre-snapshot blocks: still named by c (clone of a.s1)
    del model["a.s1"]
    await m.remove("tmp")
    return model


async def test_gc_keeps_exactly_the_referenced_objects(
        make_blocker: Callable[..., Blocker]) -> None:
    """After a full lifecycle, --grace 0 leaves exactly what the maps name (counted here
    independently); a dry run deletes nothing; a second run finds nothing."""
    b = make_blocker()
    m = Mapper(b, "gc-test:1")
    model = await scenario(m)
    # garbage the mapper itself leaves: a leaked block and an orphan chunk
    await b.put("kept+0123456789abcdef_0000000000000001_0000000000000009", b"leak")
    await b.put(chunk_name("feedfacefeedface", 0), b"orphan")
    before = set(await b.list())
    want = await expected_objects(m)
    assert want < before
    dry = await collect(b, grace=0, dry_run=True, roots=[])
    assert dry.deleted == 0 and dry.garbage == len(before - want)
    assert set(await b.list()) == before
    young = await collect(b, grace=3600, roots=[])  # everything here is seconds old
    assert young.deleted == 0 and young.young == len(before - want)
    rep = await collect(b, grace=0, roots=[])
    assert rep.deleted == len(before - want) and rep.bytes > 0
    assert set(await b.list()) == want
    await check_model(m, model)
    again = await collect(b, grace=0, roots=[])
    assert again.deleted == 0 and set(await b.list()) == want
    await m.close()


async def test_plugin_roots_are_kept(make_blocker: Callable[..., Blocker]) -> None:
    """Objects a root provider names (the gateway's blocks) survive; the rest goes; a
    failing provider aborts the collection before anything is deleted."""
    b = make_blocker()
    for n in ("aa" * 32, "bb" * 32):
        await b.put(n, b"x")

    rep = await collect(b, grace=0, roots=[lambda inst, cfg: {"aa" * 32}])
    assert rep.deleted == 1 and await b.list() == ["aa" * 32]

    def broken(inst: object, cfg: object) -> set[str]:
        raise NotFound("gateway metadata unreadable")

    with pytest.raises(NotFound):
        await collect(b, grace=0, roots=[broken])
    assert await b.list() == ["aa" * 32]


async def test_new_objects_are_young(make_blocker: Callable[..., Blocker]) -> None:
    """Every way of creating an object stamps it with the current time, so GC's grace
    period protects it (RADOS: compound writes once got the epoch as mtime); touch
    makes an absent object neither present nor young."""
    import time

    b = make_blocker()
    before = int(time.time())  # RADOS mtimes are whole seconds
    await b.put("aa" * 32, b"x" * 100)
    await b.write("bb" * 32, 0, b"y" * 100)
    await b.write("cc" * 32, 0, b"")
    await b.copy("aa" * 32, "dd" * 32)
    hashed = await b.hash("bb" * 32)
    assert await b.hash("bb" * 32) == hashed  # a dedup hit
    for name in ("aa" * 32, "bb" * 32, "cc" * 32, "dd" * 32, hashed):
        assert await b.mtime(name) >= before, name
        assert await b.touch(name)
        assert await b.mtime(name) >= before, name
    assert not await b.touch("ee" * 32)
    assert not await b.exists("ee" * 32)


async def _age(b: Blocker, names: list[str], seconds: float) -> None:
    """Make the objects look written ``seconds`` ago (real backends only)."""
    import time

    from archipelago.blocker.file import FileBlocker

    then = time.time() - seconds
    if isinstance(b, FileBlocker):
        for n in names:
            os.utime(b._path(n), (then, then))
        return
    io = await b._ioctx()  # type: ignore[attr-defined]
    for n in names:  # rewrite with an old mtime: RADOS has no utime
        op = io.create_write_op()
        try:
            op.write_full(b"an interrupted upload's block")
            io.operate_write_op(op, n, mtime=int(then))
        finally:
            io.release_write_op(op)


@pytest.mark.parametrize("backend", ["memory", "file", pytest.param("rados", marks=pytest.mark.rados)])
async def test_touch_racing_the_sweep_is_never_lost(make_blocker: Callable[..., Blocker],
                                                    backend: str) -> None:
    """A dedup hit (touch) racing GC's delete of an old unreferenced block: if the touch
    says the block is there, it still is (the uploader will not put it again and its map
    is about to name it); else the uploader puts it anew. Found by the stress test on
    file, where the sweep read the age and deleted in separate calls; on RADOS the remove
    asserts the object version the age was read at."""
    import time

    clock = [1000.0]
    b = (MemoryBlocker(MemoryStore(clock=lambda: clock[0])) if backend == "memory"
         else make_blocker())
    names = [f"{i:064x}" for i in range(200)]
    for n in names:
        await b.put(n, b"an interrupted upload's block")
    if backend == "memory":
        clock[0], cutoff = 2000.0, 1500.0
    else:
        await _age(b, names, 100)
        cutoff = time.time() - 50

    async def race(n: str) -> tuple[bool, bool]:
        deleted, touched = await asyncio.gather(b.delete_if_old(n, cutoff), b.touch(n))
        return deleted, touched

    results = await asyncio.gather(*(race(n) for n in names))
    try:
        for n, (deleted, touched) in zip(names, results, strict=True):
            assert not touched or await b.exists(n), n
            assert deleted != touched, n  # exactly one of them won
        # Without a racing touch, old objects go and young ones stay.
        await b.put("ab" * 32, b"young")
        assert not await b.delete_if_old("ab" * 32, cutoff)
        if backend != "memory":
            await _age(b, ["ab" * 32], 100)
            assert await b.delete_if_old("ab" * 32, cutoff)
        with pytest.raises(NotFound):
            await b.delete_if_old("cd" * 32, cutoff)
    finally:
        await b.close()


def test_parse_duration() -> None:
    """DURATION syntax of --grace."""
    assert [parse_duration(x) for x in ("0", "90", "90s", "15m", "2h", "1d")] == [
        0, 90, 90, 900, 7200, 86400]
    for bad in ("", "-1", "x", "1w", "nan", "inf"):
        with pytest.raises(InvalidArgument):
            parse_duration(bad)


# -- concurrency: GC in a loop while maps change (memory store, hypothesis) -----------

class YieldingBlocker(MemoryBlocker):
    """A memory blocker whose every call first yields to the event loop 0-2 times (drawn
    from a seeded RNG): the collector and the workload really interleave mid-operation."""

    def __init__(self, store: MemoryStore, seed: int) -> None:
        super().__init__(store)
        self._rng = random.Random(seed)

    async def _yield(self) -> None:
        for _ in range(self._rng.randrange(3)):
            await asyncio.sleep(0)


def _yielding(name: str) -> Callable:
    async def call(self: YieldingBlocker, *args: object, **kw: object) -> object:
        await self._yield()
        return await getattr(MemoryBlocker, name)(self, *args, **kw)

    return call


for _m in ("read", "read_existing", "write", "put", "copy", "delete", "size", "list",
           "mtime", "touch", "lock", "unlock", "lock_info", "fence_bump", "fence_check",
           "hash", "delete_if_old"):
    setattr(YieldingBlocker, _m, _yielding(_m))


OPS = st.lists(st.tuples(st.sampled_from(OP_KINDS), st.integers(0, 3), st.integers(0, 7),
                         st.integers(1, 255)), min_size=4, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, seed=st.integers(0, 2**32))
def test_gc_concurrent_with_map_operations(ops: list[Op], seed: int) -> None:
    """GC runs in a loop while snapshots, clones, writes (copy-up), zeroes, removals,
    imports and hashmap PUTs run (tests/gc_workload.py): every map reads back its model
    and names no missing object, and the store ends with exactly the referenced objects.
    Object ages come from a clock that advances one tick per finished operation."""
    ages = TickAges()
    b = YieldingBlocker(MemoryStore(clock=ages.store_clock), seed)

    async def run() -> None:
        await run_concurrent(ops, b, ages)
        await b.close()

    asyncio.run(run())


#: mtime resolution per real backend: RADOS stats whole seconds; file: a kernel tick.
MTIME_RESOLUTION = {"file": 0.05, "rados": 1.1}
STRESS_SEEDS = range(5)


@pytest.mark.parametrize("backend", ["file", pytest.param("rados", marks=pytest.mark.rados)])
async def test_gc_stress_on_real_backends(make_blocker: Callable[..., Blocker],
                                          backend: str) -> None:
    """The same workload on real object stores, with real mtimes: GC's clock is the start
    of the operation before the one in flight (plus the backend's mtime resolution as
    grace), so garbage is collected while the workload runs; a fixed set of seeded op
    lists; after each, every map reads back and exactly the referenced objects remain."""
    for seed in STRESS_SEEDS:
        rng = random.Random(seed)
        ops = [(rng.choice(OP_KINDS), rng.randrange(4), rng.randrange(8), rng.randrange(1, 256))
               for _ in range(100)]
        # One store for all seeds (headers are never deleted: tombstones keep epochs),
        # so each run's maps are named apart and the earlier runs' maps must survive too.
        await run_concurrent(ops, make_blocker(), WallAges(grace=MTIME_RESOLUTION[backend]),
                             prefix=f"r{seed}-")


# -- crash: kill -9 in the middle of the sweep ----------------------------------------

def test_gc_killed_mid_sweep_loses_nothing(tmp_path: Path) -> None:
    """`archip gc` killed (SIGKILL) after its first sweep batch: every volume still reads
    back; the next run deletes the rest and leaves exactly the referenced objects."""
    data = tmp_path / "inst"
    store = data / "blocks"

    async def setup() -> dict[str, bytes]:
        from archipelago.blocker.file import FileBlocker

        b = FileBlocker(str(store))
        m = Mapper(b, "gc-crash:1")
        model = await scenario(m)
        for i in range(300):  # enough garbage for several sweep batches
            await b.put(f"junk+00000000000000{i:02x}_0000000000000001_0000000000000000", b"j")
        await m.close()
        await b.close()
        return model

    model = asyncio.run(setup())
    env = dict(os.environ, ARCHIPELAGO_DATA_DIR=str(data))
    archip = [sys.executable, "-m", "control", "--json"]
    p = subprocess.Popen([*archip, "gc", "--grace", "0", "--progress"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    line = p.stderr.readline()  # the first batch is deleted: kill it now
    assert line.startswith("sweep "), line
    os.kill(p.pid, signal.SIGKILL)
    p.wait()

    async def verify(first: bool) -> set[str]:
        from archipelago.blocker.file import FileBlocker

        b = FileBlocker(str(store))
        m = Mapper(b, "gc-verify:1")
        await check_model(m, model)
        left = set(await b.list()) - await expected_objects(m)
        await m.close()
        await b.close()
        return left

    assert asyncio.run(verify(True))  # garbage left: the run was cut short
    # the daemon's periodic runner (python -m archipelago.upkeep) finishes the job
    out = subprocess.run([sys.executable, "-m", "archipelago.upkeep", "gc", "--data-dir",
                          str(data), "-o", "gc.grace=0"], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout)["deleted"] > 0
    assert asyncio.run(verify(False)) == set()


# -- the gateway's objects are roots (entry point archipelago.gc_roots) ---------------

def test_gc_keeps_gateway_objects_and_volumes(tmp_path: Path) -> None:
    """Volumes and Swift objects (real gateway, python-swiftclient) on one file store:
    `archip gc --grace 0` deletes exactly the leftovers (an interrupted upload's block,
    a removed volume's blocks), keeps every block of every object version (hashes
    computed here from the uploaded bytes) and every map; all data reads back."""
    import hashlib

    from swiftclient.client import Connection

    from archipelago.blocker.file import FileBlocker
    from archipelago.hashing import ZERO_HASH
    from tests.gw_helpers import GatewayThread, file_blocker

    data = tmp_path / "inst"
    data.mkdir(mode=0o700)
    store = data / "blocks"
    g = GatewayThread(file_blocker(store), data / "gateway.db").start()
    mib = 1024 * 1024
    bodies = {"one": os.urandom(5 * mib), "two": os.urandom(3 * mib) + bytes(mib),
              "gone": os.urandom(2 * mib)}
    try:
        c = Connection(authurl=f"{g.url}/auth/v1.0", user="alice", key=g.add_user("alice"),
                       retries=0, timeout=30)
        c.put_container("c")
        for name, body in bodies.items():
            c.put_object("c", name, body)
        old_one = bodies["one"]
        bodies["one"] = os.urandom(mib)  # overwritten: the old version stays as history
        c.put_object("c", "one", bodies["one"])
        c.delete_object("c", "gone")  # deleted: its version is kept (restorable)

        def blocks(body: bytes) -> set[str]:
            out = {hashlib.sha256(body[i : i + 4 * mib].rstrip(b"\0")).hexdigest()
                   for i in range(0, len(body), 4 * mib)}
            return out - {ZERO_HASH}

        gateway_blocks = set().union(*(blocks(b) for b in (*bodies.values(), old_one)))

        async def volumes() -> tuple[dict[str, bytes], set[str]]:
            b = FileBlocker(str(store))
            m = Mapper(b, "gc-gw:1")
            model = await scenario(m)
            await b.put("cd" * 32, b"an interrupted upload's block")
            want = await expected_objects(m)
            await m.close()
            await b.close()
            return model, want

        model, want = asyncio.run(volumes())
        env = dict(os.environ, ARCHIPELAGO_DATA_DIR=str(data))
        out = subprocess.run([sys.executable, "-m", "control", "--json", "gc", "--grace", "0"],
                             env=env, capture_output=True, text=True, check=True)
        assert '"deleted": ' in out.stdout and '"deleted": 0' not in out.stdout, out.stdout

        async def left() -> set[str]:
            b = FileBlocker(str(store))
            m = Mapper(b, "gc-gw:2")
            await check_model(m, model)
            names = set(await b.list())
            await m.close()
            await b.close()
            return names

        assert asyncio.run(left()) == want | gateway_blocks
        for name in ("one", "two"):
            assert c.get_object("c", name)[1] == bodies[name]
    finally:
        g.stop()
