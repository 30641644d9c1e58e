"""Batched hot path: one native call per request, batched completion drain, the completion
table indexed by descriptor, one wake-up per batch, and the adaptive spin's bounds.

The server side runs in this process (pop + complete by hand), so the order and grouping
of completions are chosen by the test (Hypothesis) instead of by the scheduler.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing as mp
import os
import signal
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peers_helpers import ECHO_PORT, Daemon, daemon_fixture, run_echo_peer

from archipelago.errors import ArchipelagoError, TimedOut
from archipelago.peers.calls import _ABANDONED, BATCH
from archipelago.peers.client import AsyncClient
from archipelago.peers.ops import Op
from archipelago.peers.port import Port
from archipelago.peers.registry import PeerLink

SERVER = 1  # a static port served by hand in this process
D_COMPLETED = 3
CTX = mp.get_context("spawn")


daemon = pytest.fixture(scope="module")(daemon_fixture)


def _start_echo(d: Daemon) -> Any:
    p = CTX.Process(target=run_echo_peer, args=(d.socket_path, ECHO_PORT), daemon=True)
    p.start()
    while d.segment.port_state(ECHO_PORT)[:2] != (1, p.pid):
        assert p.is_alive(), "echo peer did not start"
        time.sleep(0.02)
    return p


def _serve_by_hand(link: PeerLink, order: list[int], chunks: list[int],
                   drain: Any) -> list[int]:
    """Pop every queued request on SERVER and complete them in ``order`` (a permutation of
    positions), ``drain()`` after each chunk; returns the popped descriptors."""
    lib, base = link.segment.lib, link.segment.base
    popped = []
    while (idx := lib.ap_pop_request(base, SERVER)) >= 0:
        popped.append(int(idx))
    ordered = [popped[i] for i in order if i < len(popped)]
    ordered += [idx for idx in popped if idx not in ordered]
    pos = 0
    for size in [*chunks, len(ordered)]:
        for idx in ordered[pos : pos + size]:
            d = lib.ap_desc_ptr(base, idx)
            d.serviced = idx  # a reply that names its request
            assert lib.ap_complete(base, idx, -2) == 0
        pos += size
        drain()
        if pos >= len(ordered):
            break
    return popped


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3 * BATCH + 5), seed=st.randoms(use_true_random=False),
       chunks=st.lists(st.integers(1, 2 * BATCH), max_size=6),
       abandon=st.sets(st.integers(0, 3 * BATCH + 5), max_size=10))
def test_batch_drain_loses_no_completion(daemon: Daemon, n: int, seed: Any,
                                         chunks: list[int], abandon: set[int]) -> None:
    """Whatever the order and grouping of completions (more than a batch per drain
    included), every callback runs exactly once with its own descriptor, abandoned
    requests are freed, and the pool gets every descriptor back."""
    link = PeerLink(daemon.socket_path)
    server = Port(link, SERVER)
    seg = link.segment
    free0 = seg.lib.ap_desc_free_count(seg.base)

    async def main() -> None:
        client = AsyncClient(link)
        got: list[tuple[int, int]] = []
        sent: dict[int, int] = {}
        for k in range(n):
            def done(idx: int, k: int = k) -> None:
                got.append((k, idx))
                assert client.reply(idx).serviced == idx
                client.release(idx)
            sent[client.submit(SERVER, Op.INFO, f"t{k}", done=done)] = k
        assert len(sent) == n  # the table handed n distinct descriptors
        for k, idx in enumerate(list(sent)):
            if k in abandon:
                client._table[idx] = _ABANDONED  # noqa: SLF001 - what a timed-out call leaves
        order = list(range(n))
        seed.shuffle(order)
        before = client.completions
        _serve_by_hand(link, order, chunks, client.drain)
        want = {(k, idx) for idx, k in sent.items() if k not in abandon}
        assert sorted(got) == sorted(want)
        assert client.completions - before == n
        assert client.pending == 0
        client.close()

    try:
        asyncio.run(main())
        assert seg.lib.ap_desc_free_count(seg.base) == free0
    finally:
        server.close()
        link.close()


def test_completion_table_refuses_a_descriptor_twice(daemon: Daemon) -> None:
    """A descriptor still tracked is never handed to a second request: claiming it fails
    (and frees the new request) instead of overwriting the first one's completion."""
    link = PeerLink(daemon.socket_path)
    server = Port(link, SERVER)

    async def main() -> None:
        client = AsyncClient(link)
        seen: list[int] = []
        idx = client.submit(SERVER, Op.INFO, done=seen.append)
        with pytest.raises(ArchipelagoError, match="two requests"):
            client._claim(idx, lambda i: None)  # noqa: SLF001 - the guarded invariant
        assert client._table[idx] is not None  # noqa: SLF001 - the first owner kept
        _serve_by_hand(link, [0], [], client.drain)
        assert seen == [idx]
        client.release(idx)
        client.close()

    try:
        asyncio.run(main())
    finally:
        server.close()
        link.close()


def test_timed_out_call_is_freed_when_its_reply_arrives(daemon: Daemon) -> None:
    """call() that times out marks its slot abandoned; the late reply frees it, and the
    descriptor can then serve a new request (no double ownership, no leak)."""
    link = PeerLink(daemon.socket_path)
    server = Port(link, SERVER)
    seg = link.segment
    free0 = seg.lib.ap_desc_free_count(seg.base)

    async def main() -> None:
        client = AsyncClient(link)
        with pytest.raises(TimedOut):
            await client.call(SERVER, Op.INFO, timeout=0.01)
        assert client.pending == 1
        _serve_by_hand(link, [0], [], client.drain)
        assert client.pending == 0
        client.close()

    try:
        asyncio.run(main())
        assert seg.lib.ap_desc_free_count(seg.base) == free0
    finally:
        server.close()
        link.close()


def test_one_signal_per_batch_of_submissions(daemon: Daemon) -> None:
    """Everything submitted in one loop iteration to a sleeping server costs one eventfd
    signal, not one per request."""
    link = PeerLink(daemon.socket_path)
    server = Port(link, SERVER)
    lib, base, efd = link.segment.lib, link.segment.base, link.efds[SERVER]

    async def main() -> None:
        client = AsyncClient(link)
        client.port.attach()
        await asyncio.sleep(0)
        try:
            os.eventfd_read(efd)  # signals earlier tests' by-hand servers never read
        except BlockingIOError:
            pass
        assert lib.ap_prepare_sleep(base, SERVER, 1) == 1  # the server sleeps
        signals0 = client.port.signals
        for _ in range(50):
            client.submit(SERVER, Op.INFO, done=client.release)
        for _ in range(3):
            await asyncio.sleep(0)  # let the pump and the deferred flush run
        assert client.port.signals - signals0 == 1
        assert os.eventfd_read(efd) == 1
        _serve_by_hand(link, [], [], client.drain)
        client.close()

    try:
        asyncio.run(main())
    finally:
        server.close()
        link.close()


def _spin(seg: Any, max_ns: int) -> Any:
    s = seg.ffi.new("struct ap_spin *")
    seg.lib.ap_spin_init(s, max_ns)
    return s


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.tuples(st.booleans(), st.integers(0, 10**9)), max_size=300),
       max_us=st.integers(0, 200))
def test_spin_budget_is_bounded(daemon: Daemon, events: list[tuple[bool, int]],
                                max_us: int) -> None:
    """Whatever waits the spins catch or miss, a planned spin never exceeds the bound, and
    once the budget is 0 at most one idle moment in probe_every spins (a short probe)."""
    seg = daemon.segment
    s = _spin(seg, max_us * 1000)
    planned = spun = 0
    for hit, waited in events:
        b = seg.lib.ap_spin_plan(s)
        assert 0 <= b <= s.max_ns
        if b:
            planned += 1
            spun += b
            seg.lib.ap_spin_update(s, hit, waited)
        assert 0 <= s.budget_ns <= s.max_ns
    assert s.over_budget == 0
    assert spun <= planned * s.max_ns
    if max_us == 0:
        assert planned == 0
    # four misses in a row from the top take the budget to 0; then probes only
    for _ in range(4):
        seg.lib.ap_spin_update(s, 0, 0)
    assert s.budget_ns == 0
    probes = sum(seg.lib.ap_spin_plan(s) > 0 for _ in range(160))
    assert probes <= 160 // s.probe_every


def test_spin_on_an_idle_port_backs_off(daemon: Daemon) -> None:
    """A port whose peer never answers spins at most a few times, then only probes: counted
    by the spin's own counters, not timed."""
    link = PeerLink(daemon.socket_path)
    server, client = Port(link, SERVER), Port(link)
    seg = link.segment
    try:
        s = _spin(seg, 30_000)
        for _ in range(1000):
            assert seg.lib.ap_spin_adaptive(seg.base, SERVER, 3, s) == 0
        assert s.hits == 0
        assert s.episodes + s.skipped == 1000
        assert s.episodes <= 5 + 1000 // s.probe_every
        assert s.over_budget == 0
        # work queued: the spin sees it at once and says so
        idx = seg.lib.ap_desc_alloc(seg.base, client.no)
        assert seg.lib.ap_submit(seg.base, idx, SERVER, -2) == 0
        while seg.lib.ap_spin_adaptive(seg.base, SERVER, 1, s) == 0:
            pass  # budget 0: only every probe_every-th call looks
        assert s.hits == 1
        assert seg.lib.ap_pop_request(seg.base, SERVER) == idx
        seg.lib.ap_fail_local(seg.base, idx, 5)
        seg.lib.ap_desc_free(seg.base, idx, D_COMPLETED)
    finally:
        client.close()
        server.close()
        link.close()


def test_hot_path_against_a_peer_process(daemon: Daemon) -> None:
    """submit() with callbacks, more in flight than a batch, against a real peer process:
    every WRITE's reply carries its own payload's digest; the port's counters add up."""
    p = _start_echo(daemon)
    link = PeerLink(daemon.socket_path)
    seg = link.segment
    free0 = seg.lib.ap_desc_free_count(seg.base)
    n, depth = 2000, 3 * BATCH

    async def main() -> dict[str, int]:
        client = AsyncClient(link)
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        bad: list[int] = []
        state = {"sent": 0, "done": 0}

        def send() -> None:
            k = state["sent"]
            state["sent"] += 1
            data = k.to_bytes(8, "little") * 8

            def done(idx: int) -> None:
                with client.reply(idx) as r:
                    if bytes(r.data) != hashlib.sha256(data).digest():
                        bad.append(k)
                state["done"] += 1
                if state["sent"] < n:
                    send()
                elif state["done"] == n:
                    finished.set_result(None)
            client.submit(ECHO_PORT, Op.WRITE, "obj", 0, len(data), data, done=done)

        for _ in range(depth):
            send()
        await asyncio.wait_for(finished, 60)
        assert bad == []
        stats = client.port.stats()
        client.close()
        return stats

    try:
        stats = asyncio.run(main())
        assert stats["completions"] == n
        assert 1 <= stats["completion_batches"] <= n
        assert stats["spin_hits"] <= stats["spins"]
        assert stats["spin_preempted"] <= stats["spins"]
        assert seg.lib.ap_desc_free_count(seg.base) == free0
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        link.close()


def test_pings_answered_in_c_count_as_served_progress(daemon: Daemon) -> None:
    """A drain that only answered PINGs (in C) reports progress and counts them served, so
    the pump keeps going instead of napping, and the status counters add up."""
    from peers_helpers import EchoPeer

    link = PeerLink(daemon.socket_path)

    async def main() -> None:
        peer = EchoPeer(link, SERVER)
        client = AsyncClient(link)
        got: list[int] = []
        for _ in range(10):
            client.submit(SERVER, Op.PING, done=got.append)
        assert peer.drain() is True
        assert peer.served == 10
        assert peer.drain() is False  # nothing left: no progress
        client.drain()
        assert len(got) == 10
        for idx in got:
            client.release(idx)
        assert peer.port.stats()["requests"] == 10
        client.close()
        peer.close()

    try:
        asyncio.run(main())
    finally:
        link.close()
