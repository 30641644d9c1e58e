"""Peers end to end: registry, ping, errors, splitting, stress, and crash recovery."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from peers_helpers import (
    ECHO_PORT,
    STRESS,
    Daemon,
    daemon_fixture,
    make_daemon,
    run_busy_client,
    run_echo_peer,
    run_stress_client,
)

from archipelago.errors import Busy, InvalidArgument, NotRunning, PeerDied, TimedOut
from archipelago.peers.client import AsyncClient, BlockingClient
from archipelago.peers.ops import Op
from archipelago.peers.registry import PeerLink

CTX = mp.get_context("spawn")


daemon = pytest.fixture(daemon_fixture)


def start_echo(d: Daemon, port: int = ECHO_PORT) -> Any:
    """Spawn an echo peer and wait until it has bound its port."""
    p = CTX.Process(target=run_echo_peer, args=(d.socket_path, port), daemon=True)
    p.start()
    deadline = time.monotonic() + 30
    while d.segment.port_state(port)[:2] != (1, p.pid):
        assert time.monotonic() < deadline and p.is_alive(), "echo peer did not start"
        time.sleep(0.02)
    return p


def kill(p: Any) -> None:
    if p.is_alive():
        os.kill(p.pid, signal.SIGKILL)
    p.join(10)


def wait_full(d: Daemon, limit: float) -> float:
    """Seconds until the pool and arena are full again (fails after ``limit``)."""
    t0 = time.monotonic()
    while not d.segment.is_full():
        assert time.monotonic() - t0 < limit, (
            f"resources not reclaimed: descs {d.segment.free_descs()}/{d.segment.nr_desc}, "
            f"buffers {d.segment.free_buffers()}")
        time.sleep(0.005)
    return time.monotonic() - t0


@pytest.fixture
def echo(daemon: Daemon) -> Iterator[Any]:
    p = start_echo(daemon)
    try:
        yield p
    finally:
        kill(p)


def test_registry_files_are_private(daemon: Daemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(daemon.socket_path)).st_mode) == 0o700
    link = PeerLink(daemon.socket_path)
    try:
        assert len(link.efds) == daemon.segment.nr_ports
        port, gen = link.bind(1)
        assert port == 1 and gen >= 1
        with pytest.raises(Busy):
            link.bind(1)
        with pytest.raises(InvalidArgument):
            link.bind(daemon.segment.nr_static)
        dyn, _ = link.bind()
        assert dyn >= daemon.segment.nr_static
        link.unbind(1)
        assert link.bind(1)[1] == gen + 1  # rebinding a port bumps its generation
    finally:
        link.close()
    with pytest.raises(NotRunning):
        PeerLink(daemon.socket_path + ".nope")


def test_ping_errors_and_split_io(daemon: Daemon, echo: Any) -> None:
    link = PeerLink(daemon.socket_path)
    bc = BlockingClient(link)
    try:
        bc.ping(ECHO_PORT)
        with pytest.raises(PeerDied):
            bc.ping(2)  # nobody bound there
        with pytest.raises(InvalidArgument):
            bc.ping(10_000)
        with pytest.raises(InvalidArgument, match="does not do CTRL"):
            bc.call(ECHO_PORT, Op.CTRL, "v")
        with bc.call(ECHO_PORT, Op.INFO, "vol1") as r:
            assert bytes(r.data) == b"info:vol1"
        big = bytearray(9 * 1024 * 1024 + 5)
        assert bc.read_into(ECHO_PORT, "obj", 0, big) == len(big)
        assert bc.write(ECHO_PORT, "obj", 0, bytes(9 * 1024 * 1024)) == 9 * 1024 * 1024

        async def main() -> None:
            c = AsyncClient(link)
            await c.ping(ECHO_PORT)
            data = await c.read(ECHO_PORT, "obj", 0, 9 * 1024 * 1024 + 5)
            assert data == big  # the echo peer's READ pattern, the same through both clients
            assert await c.write(ECHO_PORT, "obj", 0, bytes(9 * 1024 * 1024)) == 9 * 1024 * 1024
            with pytest.raises(InvalidArgument):
                await c.call(ECHO_PORT, Op.READ, "obj", 0, 8 * 1024 * 1024)  # > max buffer
            c.close()

        asyncio.run(main())
    finally:
        bc.close()
        link.close()
    wait_full(daemon, 5)


@pytest.mark.timeout(240)
def test_stress_four_clients() -> None:
    d = make_daemon(STRESS)
    p = start_echo(d)
    try:
        q = CTX.Queue()
        n = 20000
        clients = [CTX.Process(target=run_stress_client, args=(d.socket_path, n, s, 16, q))
                   for s in range(4)]
        for c in clients:
            c.start()
        results = [q.get(timeout=200) for _ in clients]
        for c in clients:
            c.join(30)
        assert results == [(n, 0)] * 4
        wait_full(d, 5)
    finally:
        kill(p)
        d.close()


def test_kill_client_reclaims_within_a_second(daemon: Daemon, echo: Any) -> None:
    ready = CTX.Event()
    c = CTX.Process(target=run_busy_client, args=(daemon.socket_path, ready), daemon=True)
    c.start()
    assert ready.wait(30)
    assert not daemon.segment.is_full()  # traffic in flight
    os.kill(c.pid, signal.SIGKILL)
    c.join(10)
    wait_full(daemon, 1.0)
    link = PeerLink(daemon.socket_path)  # the server is unharmed
    BlockingClient(link).ping(ECHO_PORT)
    link.close()


def test_kill_server_fails_blocked_clients_and_rebinds(daemon: Daemon) -> None:
    server = start_echo(daemon)
    link = PeerLink(daemon.socket_path)
    bc = BlockingClient(link)
    outcome: dict[str, Any] = {}

    def blocked() -> None:
        try:
            bc.call(ECHO_PORT, Op.TRUNCATE, "v", timeout=60)
        except PeerDied as exc:
            outcome["thread"] = (exc, time.monotonic())

    async def async_blocked(killed: threading.Event) -> float:
        c = AsyncClient(link)
        fut = asyncio.ensure_future(c.call(ECHO_PORT, Op.TRUNCATE, "v"))
        await asyncio.sleep(0.2)
        killed.wait()
        t0 = time.monotonic()
        with pytest.raises(PeerDied):
            await fut
        c.close()
        return time.monotonic() - t0

    try:
        t = threading.Thread(target=blocked)
        t.start()
        killed = threading.Event()
        def do_kill() -> None:
            outcome["killed_at"] = time.monotonic()
            kill(server)
            killed.set()

        ok = threading.Timer(0.5, do_kill)
        ok.start()
        async_delay = asyncio.run(async_blocked(killed))
        t.join(10)
        assert not t.is_alive() and "thread" in outcome
        assert outcome["thread"][1] - outcome["killed_at"] < 1.0  # the blocking wait in C
        assert async_delay < 1.0
        assert daemon.segment.port_state(ECHO_PORT)[0] == 0
        server = start_echo(daemon)  # a restarted server rebinds its static port
        bc.ping(ECHO_PORT)
    finally:
        bc.close()
        link.close()
        kill(server)


def test_forwarding_peer_is_server_and_client_on_one_port(daemon: Daemon) -> None:
    """The mapper pattern: one port serves clients and sends sub-requests to another peer."""
    from archipelago.peers.peer import Peer
    from archipelago.peers.request import Request

    server = start_echo(daemon)

    class Forwarder(Peer):
        async def dispatch(self, req: Request) -> None:
            # share=req: the sub-request borrows req's buffer (zero copy, no allocation)
            with await self.sub.call(ECHO_PORT, req.op, req.target, req.offset, req.size,
                                     share=req) as r:
                req.reply(bytes(r.data), serviced=r.serviced)

    async def main() -> None:
        link = PeerLink(daemon.socket_path)
        fwd = Forwarder(link, 1)
        fwd.sub = AsyncClient(link, fwd.port)  # type: ignore[attr-defined]
        task = asyncio.ensure_future(fwd.serve())
        client = AsyncClient(link)
        data = os.urandom(100_000)
        import hashlib

        async def one() -> bool:
            with await client.call(1, Op.WRITE, "o", 0, len(data), data) as r:
                return bytes(r.data) == hashlib.sha256(data).digest() and r.serviced == len(data)

        assert all(await asyncio.gather(*(one() for _ in range(50))))
        kill(server)
        with pytest.raises(PeerDied):
            await client.call(1, Op.WRITE, "o", 0, 3, b"abc")
        fwd.stop()
        await task
        fwd.close()
        client.close()
        link.close()

    try:
        asyncio.run(main())
    finally:
        kill(server)
    wait_full(daemon, 5)


def test_daemon_death_fails_waiting_clients() -> None:
    """The registry vanishing (daemon killed) ends every wait with PeerDied, none hang."""
    d = make_daemon()
    server = start_echo(d)
    link = PeerLink(d.socket_path)
    bc = BlockingClient(link)
    bc.ping(ECHO_PORT)
    got: list[BaseException] = []

    def blocked() -> None:
        try:
            bc.call(ECHO_PORT, Op.TRUNCATE, "v", timeout=60)
        except PeerDied as exc:
            got.append(exc)

    async def main() -> None:
        c = AsyncClient(link)
        fut = asyncio.ensure_future(c.call(ECHO_PORT, Op.TRUNCATE, "v"))
        await asyncio.sleep(0.3)
        for conn in d.registry._conns:  # die without reclaiming anything, like a kill -9
            d.registry._conns[conn] = set()
        d.registry.stop()
        with pytest.raises(PeerDied):  # "registry died", or the server's "stopped" reply
            await asyncio.wait_for(fut, 10)

    t = threading.Thread(target=blocked)
    t.start()
    try:
        asyncio.run(main())
        t.join(10)
        assert len(got) == 1
        server.join(10)  # the server peer noticed too and exited
        assert not server.is_alive()
    finally:
        kill(server)
        link.close()
        d.close()  # the registry is already stopped: this unlinks the segment and socket dir


def test_ring_slot_of_a_dead_producer_is_repaired(daemon: Daemon, echo: Any) -> None:
    """A producer killed between claiming a ring slot and publishing it stalls that ring;
    the registry's stall watch tombstones the slot and traffic resumes."""
    import struct

    seg = daemon.segment
    ring = seg.lib.ap_port_req_ring(seg.base, ECHO_PORT)
    (tail,) = struct.unpack_from("<Q", seg.view, ring + 64)
    struct.pack_into("<Q", seg.view, ring + 64, tail + 1)  # claimed, never published
    assert seg.lib.ap_ring_stalled(seg.base, ring) == tail
    link = PeerLink(daemon.socket_path)
    bc = BlockingClient(link)
    try:
        with pytest.raises(TimedOut):
            bc.ping(ECHO_PORT, timeout=0.3)  # queued behind the dead slot
        daemon.registry._loop.call_soon_threadsafe(daemon.registry.watch_stalls)
        bc.ping(ECHO_PORT, timeout=10)
        assert seg.lib.ap_ring_stalled(seg.base, ring) == -1
    finally:
        bc.close()
        link.close()
    wait_full(daemon, 5)
