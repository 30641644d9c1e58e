"""Shared-memory peers: Segment (create/join), Registry (owner: ports, eventfds, reclaim) and
PeerLink (joiner); Peer (serve a port: ``async def dispatch(req)``), AsyncClient/BlockingClient
(``call(dst, op, ...) -> Reply``), retry (re-issue after PeerDied), RemoteBlocker/BlockerPeer.
Imports errors, hashing, native (remote.py also the blocker contract: tests/test_layers.py).
"""

from archipelago.peers.client import AsyncClient, BlockingClient
from archipelago.peers.ops import Flag, Op
from archipelago.peers.peer import Peer
from archipelago.peers.port import Port
from archipelago.peers.registry import PeerLink, Registry
from archipelago.peers.request import Reply, Request
from archipelago.peers.segment import Segment, SegmentConfig

__all__ = [
    "AsyncClient", "BlockingClient", "Flag", "Op", "Peer", "PeerLink", "Port", "Registry",
    "Reply", "Request", "Segment", "SegmentConfig",
]
