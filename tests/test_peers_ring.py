"""The lock-free ring against a deque model: one process, and two processes in lockstep."""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archipelago.native import ffi, lib

CAP = 8


def _pop(base: Any, off: int = 0) -> int | None:
    out = ffi.new("uint64_t *")
    return int(out[0]) if lib.ap_ring_pop(base, off, out) == 0 else None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2**64 - 1), st.none()), max_size=200))
def test_ring_matches_deque(ops: list[int | None]) -> None:
    mem = bytearray(lib.ap_ring_bytes(CAP))
    base = ffi.from_buffer(mem)
    lib.ap_ring_init(base, 0, CAP)
    model: deque[int] = deque()
    for op in ops:
        if op is None:
            assert _pop(base) == (model.popleft() if model else None)
        else:
            ok = lib.ap_ring_push(base, 0, op) == 0
            assert ok == (len(model) < CAP)
            if ok:
                model.append(op)
        assert lib.ap_ring_count(base, 0) == len(model)


# -- two processes sharing a ring in /dev/shm ---------------------------------------------

def _map(path: str) -> tuple[mmap.mmap, Any]:
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, os.fstat(fd).st_size)
    os.close(fd)
    return mm, ffi.from_buffer(mm)


def _lockstep_worker(path: str, conn: Any) -> None:
    from archipelago.native import ffi as f
    from archipelago.native import lib as native_lib
    mm, base = _map(path)
    out = f.new("uint64_t *")
    while (msg := conn.recv()) is not None:
        op, val = msg
        if op == "push":
            conn.send(native_lib.ap_ring_push(base, 0, val) == 0)
        else:
            conn.send(int(out[0]) if native_lib.ap_ring_pop(base, 0, out) == 0 else None)


def _producer(path: str, tag: int, n: int) -> None:
    from archipelago.native import lib as native_lib
    mm, base = _map(path)
    for i in range(n):
        while native_lib.ap_ring_push(base, 0, (tag << 32) | i) != 0:
            pass


@pytest.fixture
def shared_ring() -> Iterator[str]:
    path = f"/dev/shm/archip-test-ring-{uuid.uuid4().hex[:8]}"
    with open(path, "wb") as f:
        f.truncate(lib.ap_ring_bytes(CAP) + 4096)
    try:
        yield path
    finally:
        os.unlink(path)


@pytest.fixture
def worker(shared_ring: str) -> Iterator[tuple[str, Any]]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_lockstep_worker, args=(shared_ring, child), daemon=True)
    p.start()
    try:
        yield shared_ring, parent
    finally:
        parent.send(None)
        p.join(10)
        if p.is_alive():
            p.kill()


ops2 = st.lists(st.tuples(st.booleans(), st.one_of(st.integers(0, 2**40), st.none())),
                max_size=60)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops2)
def test_ring_two_processes_lockstep(worker: tuple[str, Any], ops: list[Any]) -> None:
    path, conn = worker
    mm, base = _map(path)
    lib.ap_ring_init(base, 0, CAP)
    model: deque[int] = deque()
    for remote, val in ops:
        if remote:
            conn.send(("push", val) if val is not None else ("pop", None))
            got = conn.recv()
        elif val is not None:
            got = lib.ap_ring_push(base, 0, val) == 0
        else:
            got = _pop(base)
        if val is None:
            assert got == (model.popleft() if model else None)
        else:
            assert got == (len(model) < CAP)
            if got:
                model.append(val)
    del base
    mm.close()


def test_ring_two_producers_concurrent(shared_ring: str) -> None:
    n = 20000
    mm, base = _map(shared_ring)
    lib.ap_ring_init(base, 0, CAP)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_producer, args=(shared_ring, tag, n)) for tag in (1, 2)]
    for p in procs:
        p.start()
    nxt = {1: 0, 2: 0}
    out = ffi.new("uint64_t *")
    while nxt[1] < n or nxt[2] < n:
        if lib.ap_ring_pop(base, 0, out) == 0:
            tag, seq = out[0] >> 32, out[0] & 0xFFFFFFFF
            assert seq == nxt[tag], "per-producer FIFO order violated"
            nxt[tag] += 1
        elif not any(p.is_alive() for p in procs) and lib.ap_ring_count(base, 0) == 0:
            break
    for p in procs:
        p.join(30)
    assert nxt == {1: n, 2: n}
    del base
    mm.close()
