"""Peers benchmark: PING messages/s and latency through the segment vs an asyncio unix socket,
and 4 MiB payload throughput through the segment vs a pipe, measured in the same run.

Run: ``python -m benchmarks.peers [--pings N] [--depth D] [--mib M]``. The last line is
``peers: ratio_vs_unix_socket=<x> payload_gib_s=<y>``.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import multiprocessing as mp
import os
import shutil
import statistics
import struct
import tempfile
import time
import uuid
from typing import Any

import uvloop

from archipelago.peers.client import AsyncClient, BlockingClient
from archipelago.peers.ops import Op
from archipelago.peers.peer import Peer
from archipelago.peers.registry import PeerLink, Registry
from archipelago.peers.request import Request
from archipelago.peers.segment import MiB, Segment, SegmentConfig

PORT = 0
MSG = 64  # bytes per socket request/reply: a descriptor's hot fields
PAYLOAD = 4 * MiB
F_SETPIPE_SZ = 1031


class SinkPeer(Peer):
    """WRITE: the payload is already in shared memory; acknowledge it (zero copy)."""

    async def dispatch(self, req: Request) -> None:
        """Acknowledge the whole payload without touching it."""
        req.reply(serviced=len(req.data))


def _serve_peer(socket_path: str) -> None:
    async def main() -> None:
        await SinkPeer(PeerLink(socket_path), PORT, max_inflight=256).serve()

    uvloop.run(main())


class _EchoProto(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.t.write(data)  # fixed-size frames: echoing the bytes echoes every request


def _serve_socket(path: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_unix_server(_EchoProto, path)
        await srv.serve_forever()

    uvloop.run(main())


class _ClientProto(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiters: dict[int, asyncio.Future[None]] = {}

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= MSG:
            (rid,) = struct.unpack_from("<Q", self.buf)
            del self.buf[:MSG]
            self.waiters.pop(rid).set_result(None)


async def _socket_rate(path: str, n: int, depth: int) -> float:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_unix_connection(_ClientProto, path)
    ids = iter(range(1 << 62))
    pad = bytes(MSG - 8)

    async def worker(count: int) -> None:
        for _ in range(count):
            rid = next(ids)
            fut = loop.create_future()
            proto.waiters[rid] = fut
            proto.t.write(struct.pack("<Q", rid) + pad)
            await fut

    await asyncio.gather(*(worker(100) for _ in range(depth)))  # warm-up
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(n // depth) for _ in range(depth)))
    dt = time.perf_counter() - t0
    proto.t.close()
    return (n // depth) * depth / dt


async def _segment_rate(client: AsyncClient, n: int, depth: int) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await client.ping(PORT)

    await asyncio.gather(*(worker(100) for _ in range(depth)))
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(n // depth) for _ in range(depth)))
    return (n // depth) * depth / (time.perf_counter() - t0)


async def _segment_submit_rate(client: AsyncClient, n: int, depth: int) -> float:
    """PINGs with ``depth`` in flight on the hot path: a completion callback per descriptor
    re-submits at once (no Task, no Future per request)."""
    loop = asyncio.get_running_loop()

    async def run(count: int) -> float:
        finished = loop.create_future()
        left = [count - depth]
        todo = [count]

        def done(idx: int) -> None:
            client.release(idx)
            todo[0] -= 1
            if left[0] > 0:
                left[0] -= 1
                client.submit(PORT, Op.PING, done=done)
            elif todo[0] == 0:
                finished.set_result(None)

        t0 = time.perf_counter()
        for _ in range(depth):
            client.submit(PORT, Op.PING, done=done)
        await finished
        return count / (time.perf_counter() - t0)

    await run(max(depth, 1000))  # warm-up
    return await run(n)


async def _segment_payload(client: AsyncClient, total: int, depth: int) -> float:
    src = os.urandom(PAYLOAD)
    count = total // PAYLOAD

    async def worker(k: int) -> None:
        for _ in range(k):
            (await client.call(PORT, Op.WRITE, "blk", 0, PAYLOAD, src)).release()

    await worker(2)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(count // depth) for _ in range(depth)))
    return (count // depth) * depth * PAYLOAD / (time.perf_counter() - t0) / 2**30


def _pipe_reader(fd: int, total: int) -> None:
    buf = bytearray(PAYLOAD)
    mv = memoryview(buf)
    got = 0
    while got < total:
        n = os.readv(fd, [mv])
        if n == 0:
            break
        got += n


def _pipe_payload(total: int) -> float:
    r, w = os.pipe()
    for fd in (r, w):
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)  # the largest unprivileged pipe
        except OSError:
            pass
    p = mp.get_context("fork").Process(target=_pipe_reader, args=(r, total))
    p.start()
    os.close(r)
    src = os.urandom(PAYLOAD)
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        sent += os.write(w, src)
    os.close(w)
    p.join()
    return total / (time.perf_counter() - t0) / 2**30


def _latency_us(fn: Any, n: int) -> float:
    for _ in range(100):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    """Run every measurement and print the summary line last."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pings", type=int, default=100_000)
    ap.add_argument("--depth", type=int, default=32, help="requests in flight")
    ap.add_argument("--mib", type=int, default=2048, help="payload MiB per throughput run")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians shown)")
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    tmp = tempfile.mkdtemp(prefix="archip-bench-")
    seg = Segment.create(f"archip-bench-{uuid.uuid4().hex[:8]}", SegmentConfig(
        nr_ports=8, nr_static=2, nr_desc=1024, classes=((4096, 256), (4 * MiB, 16))))
    reg = Registry(seg, os.path.join(tmp, "registry.sock"))
    reg.start_thread()
    sock_path = os.path.join(tmp, "echo.sock")
    procs = [ctx.Process(target=_serve_peer, args=(reg.socket_path,), daemon=True),
             ctx.Process(target=_serve_socket, args=(sock_path,), daemon=True)]
    for p in procs:
        p.start()
    while seg.port_state(PORT)[0] != 1 or not os.path.exists(sock_path):
        time.sleep(0.02)
    link = PeerLink(reg.socket_path)
    total = args.mib * MiB
    try:
        # the transport without Python on the client side (what a C nbdkit filter would see)
        cport, _ = link.bind()
        lib, efds, base = seg.lib, link.efds, link.segment.base

        def c_loop(n: int) -> float:
            t0 = time.perf_counter()
            done = lib.ap_ping_loop(base, cport, PORT, efds[PORT], efds[cport], n, args.depth,
                                    10000)
            return done / (time.perf_counter() - t0)

        async def run_async() -> dict[str, list[float]]:
            # every measurement in short rounds, interleaved: a burst of load from another
            # process hits all of them alike instead of one
            client = AsyncClient(link)
            n, d, out = args.pings // args.rounds, args.depth, {}
            for _ in range(args.rounds):
                for key, v in (("hot", await _segment_submit_rate(client, n, d)),
                               ("task", await _segment_rate(client, n, d)),
                               ("sock", await _socket_rate(sock_path, n, d)),
                               ("c", c_loop(4 * n)),
                               ("hot1", await _segment_submit_rate(client, n // 10, 1)),
                               ("task1", await _segment_rate(client, n // 10, 1)),
                               ("sock1", await _socket_rate(sock_path, n // 10, 1))):
                    out.setdefault(key, []).append(v)
            out["gib"] = [await _segment_payload(client, total, 4)]
            stats.update(client.port.stats())
            client.close()
            return out

        stats: dict[str, int] = {}
        runs = uvloop.run(run_async())
        link.unbind(cport)
        r = {k: statistics.median(v) for k, v in runs.items()}
        sock_rate, gib, c_rate = r["sock"], r["gib"], r["c"]
        bc = BlockingClient(link)
        blocking_us = _latency_us(lambda: bc.ping(PORT), args.pings // 10)
        bc.close()
        pipe_gib = _pipe_payload(total)
    finally:
        for p in procs:
            p.kill()
            p.join()
        link.close()
        reg.stop()
        seg.close()
        seg.unlink()
        shutil.rmtree(tmp, ignore_errors=True)

    ratio = r["hot"] / sock_rate
    rtt = r["sock1"] / r["hot1"]  # segment round trip / socket round trip
    print(f"PING depth {args.depth}: segment hot path (submit + completion callback) "
          f"{r['hot']:,.0f} msg/s, segment with a Task awaiting each call {r['task']:,.0f} "
          f"msg/s, asyncio unix socket ({MSG} B frames, a Task awaiting each) "
          f"{sock_rate:,.0f} msg/s, ratios {ratio:.2f}x and {r['task'] / sock_rate:.2f}x")
    print(f"PING depth 1 round trip: segment hot path {1e6 / r['hot1']:.1f} us, "
          f"awaited call {1e6 / r['task1']:.1f} us, unix socket {1e6 / r['sock1']:.1f} us "
          f"(ratio {rtt:.2f}x), blocking client (C wait, GIL released) {blocking_us:.1f} us")
    print("client port counters: " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    print(f"PING depth {args.depth} from a C client loop (no Python per message on the "
          f"client, server answers PING in C): {c_rate:,.0f} msg/s, "
          f"{c_rate / sock_rate:.1f}x the asyncio unix socket")
    print(f"4 MiB payload: segment {gib:.2f} GiB/s, pipe (1 MiB pipe buffer) {pipe_gib:.2f} GiB/s,"
          f" ratio {gib / pipe_gib:.2f}x")
    print(f"peers: ratio_vs_unix_socket={ratio:.2f} rtt_vs_unix_socket={rtt:.2f} "
          f"c_ratio_vs_unix_socket={c_rate / sock_rate:.2f} "
          f"task_ratio_vs_unix_socket={r['task'] / sock_rate:.2f} payload_gib_s={gib:.2f}")


if __name__ == "__main__":
    main()
