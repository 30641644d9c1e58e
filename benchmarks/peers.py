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
        async def run_async() -> tuple[float, float, float, float, float]:
            client = AsyncClient(link)
            seg_rate = await _segment_rate(client, args.pings, args.depth)
            sock_rate = await _socket_rate(sock_path, args.pings, args.depth)
            seg1 = await _segment_rate(client, args.pings // 10, 1)
            sock1 = await _socket_rate(sock_path, args.pings // 10, 1)
            gib = await _segment_payload(client, total, 4)
            client.close()
            return seg_rate, sock_rate, seg1, sock1, gib

        seg_rate, sock_rate, seg1, sock1, gib = uvloop.run(run_async())
        # the transport without Python on the client side (what a C nbdkit filter would see)
        cport, _ = link.bind()
        lib, efds = seg.lib, link.efds
        t0 = time.perf_counter()
        done = lib.ap_ping_loop(link.segment.base, cport, PORT, efds[PORT], efds[cport],
                                args.pings * 4, args.depth, 10000)
        c_rate = done / (time.perf_counter() - t0)
        link.unbind(cport)
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

    ratio = seg_rate / sock_rate
    print(f"PING depth {args.depth}: segment {seg_rate:,.0f} msg/s, "
          f"asyncio unix socket ({MSG} B frames) {sock_rate:,.0f} msg/s, ratio {ratio:.2f}x")
    print(f"PING depth 1 round trip: segment {1e6 / seg1:.1f} us, unix socket {1e6 / sock1:.1f} us,"
          f" blocking client (C wait, GIL released) {blocking_us:.1f} us")
    print(f"PING depth {args.depth} from a C client loop (no Python per message on the "
          f"client, server answers PING in C): {c_rate:,.0f} msg/s, "
          f"{c_rate / sock_rate:.1f}x the asyncio unix socket")
    print(f"4 MiB payload: segment {gib:.2f} GiB/s, pipe (1 MiB pipe buffer) {pipe_gib:.2f} GiB/s,"
          f" ratio {gib / pipe_gib:.2f}x")
    print(f"peers: ratio_vs_unix_socket={ratio:.2f} payload_gib_s={gib:.2f}")


if __name__ == "__main__":
    main()
