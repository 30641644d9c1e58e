"""Area fixtures for the peers tests: a segment + registry, and peer processes to spawn."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from archipelago.errors import InvalidArgument
from archipelago.peers.ops import Op
from archipelago.peers.peer import Peer
from archipelago.peers.registry import PeerLink, Registry
from archipelago.peers.request import Request
from archipelago.peers.segment import Segment, SegmentConfig

SMALL = SegmentConfig(nr_ports=16, nr_static=4, nr_desc=512,
                      classes=((4096, 256), (64 * 1024, 64), (4 * 1024 * 1024, 8)))
ECHO_PORT = 0


@dataclass
class Daemon:
    """A segment owned by this process and its registry thread."""

    segment: Segment
    registry: Registry
    socket_path: str

    def close(self) -> None:
        self.registry.stop()
        self.segment.close()
        self.segment.unlink()
        shutil.rmtree(os.path.dirname(self.socket_path), ignore_errors=True)


def make_daemon(config: SegmentConfig = SMALL) -> Daemon:
    """Create a uniquely named segment and start its registry in a thread."""
    name = f"archip-test-{uuid.uuid4().hex[:12]}"
    seg = Segment.create(name, config)
    sock_dir = tempfile.mkdtemp(prefix="archip-peers-")
    reg = Registry(seg, os.path.join(sock_dir, "registry.sock"))
    reg.start_thread()
    return Daemon(seg, reg, reg.socket_path)


def daemon_fixture() -> Iterator[Daemon]:
    d = make_daemon()
    try:
        yield d
    finally:
        d.close()


class EchoPeer(Peer):
    """WRITE returns sha256 of the payload in the reply; READ returns a pattern; CTRL fails."""

    async def dispatch(self, req: Request) -> None:
        if req.op == Op.WRITE:
            req.reply(hashlib.sha256(req.data).digest(), serviced=len(req.data))
        elif req.op == Op.READ:
            pattern = hashlib.sha256(f"{req.target}:{req.offset}".encode()).digest()
            n = req.size
            buf = req.reply_buffer(n)
            buf[:] = (pattern * (n // 32 + 1))[:n]
            req.d.serviced = n
        elif req.op == Op.INFO:
            await asyncio.sleep(0.001)
            req.reply(b"info:" + req.target.encode())
        elif req.op == Op.TRUNCATE:
            await asyncio.sleep(3600)  # never answers: used to test server death
        else:
            raise InvalidArgument(f"echo peer does not do {req.op.name}")


def run_echo_peer(socket_path: str, port: int = ECHO_PORT, max_inflight: int = 64) -> None:
    """Process entry point: serve EchoPeer on ``port`` until killed."""
    import uvloop

    async def main() -> None:
        link = PeerLink(socket_path)
        peer = EchoPeer(link, port, max_inflight=max_inflight)
        await peer.serve()

    uvloop.run(main())


STRESS = SegmentConfig(nr_ports=16, nr_static=4, nr_desc=1024,
                       classes=((4096, 512), (64 * 1024, 256), (1024 * 1024, 32),
                                (4 * 1024 * 1024, 8)))


def _payload_size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.5:
        return rng.randint(0, 4096)
    if r < 0.9:
        return rng.randint(4097, 65536)
    return rng.randint(65537, 1024 * 1024)


def run_stress_client(socket_path: str, n: int, seed: int, depth: int, result: Any) -> None:
    """Process entry point: ``n`` WRITEs of random sizes, each reply checked; puts a summary."""
    import uvloop

    from archipelago.peers.client import AsyncClient

    async def main() -> tuple[int, int]:
        link = PeerLink(socket_path)
        client = AsyncClient(link)
        rng = random.Random(seed)
        blob = os.urandom(1024 * 1024 + 4096)
        ok = bad = 0

        async def worker(count: int) -> None:
            nonlocal ok, bad
            for _ in range(count):
                size = _payload_size(rng)
                start = rng.randint(0, 4096)
                data = memoryview(blob)[start : start + size]
                with await client.call(ECHO_PORT, Op.WRITE, "obj", 0, size, data) as reply:
                    if bytes(reply.data) == hashlib.sha256(data).digest() and \
                            reply.serviced == size:
                        ok += 1
                    else:
                        bad += 1

        await asyncio.gather(*(worker(n // depth) for _ in range(depth)))
        client.close()
        link.close()
        return ok, bad

    result.put(uvloop.run(main()))


def run_busy_client(socket_path: str, ready: Any) -> None:
    """Process entry point: keep many requests in flight forever (to be killed -9)."""
    import uvloop

    from archipelago.peers.client import AsyncClient

    async def main() -> None:
        link = PeerLink(socket_path)
        client = AsyncClient(link)
        data = os.urandom(200_000)

        async def worker() -> None:
            while True:
                (await client.call(ECHO_PORT, Op.WRITE, "x", 0, len(data), data)).release()

        tasks = [asyncio.ensure_future(worker()) for _ in range(16)]
        await asyncio.sleep(0.2)
        ready.set()
        await asyncio.gather(*tasks)

    uvloop.run(main())
