"""Area fixtures for the peers tests: a segment + registry, and peer processes to spawn."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

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
