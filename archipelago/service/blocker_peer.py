"""A blocker peer process: serve the configured Blocker (file/rados) on one static port.

Run by the supervisor as ``python -m archipelago.service.blocker_peer --port N``.
SIGTERM (or the registry going away) stops it after closing the blocker (flush).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from archipelago.blocker import open_blocker
from archipelago.blocker.rados_fence import CLIENTS_DIR
from archipelago.peers.ops import Flag, Op
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Request
from archipelago.service.peer_process import child_args, load, run_child
from archipelago.service.remote_blocker import BlockerPeer

log = logging.getLogger("archipelago.blocker-peer")


class DirectBlockerPeer(BlockerPeer):
    """A BlockerPeer whose READs land straight in the request's segment buffer when the
    blocker can fill a buffer (RadosBlocker.read_into): no bytes object, no copy."""

    async def dispatch(self, req: Request) -> None:
        """READ via ``read_into`` if the blocker has it; everything else as BlockerPeer."""
        read_into = getattr(self.blocker, "read_into", None)
        if req.op == Op.READ and read_into is not None and req.size:
            await read_into(req.target, req.offset, req.reply_buffer(req.size),
                            must_exist=bool(req.flags & Flag.MUST_EXIST))
            req.reply(serviced=req.size)
            return
        await super().dispatch(req)


async def publish_client(blocker: object, directory: str, port: int) -> None:
    """Connect, publish our client address before serving (the mapper peer registers it
    as a writer of the maps it fences), and exit once the cluster blocklists us."""
    from archipelago.blocker.rados_fence import publish_addr

    def blocklisted() -> None:
        # This client instance is dead for good (a forced takeover of one of our maps):
        # exit at once; the supervisor restarts us with a new client and the mapper
        # re-issues our requests in flight, re-checking the fences of fenced ones.
        log.error("blocker peer on port %d: blocklisted by the Ceph cluster: restarting", port)
        os._exit(75)

    await blocker.open()  # type: ignore[attr-defined]
    publish_addr(directory, str(port), blocker._cluster.get_addrs())  # type: ignore[attr-defined]
    blocker.on_blocklisted = blocklisted  # type: ignore[attr-defined]


async def serve(args: object) -> int:
    """Bind the port and serve until stopped."""
    inst, cfg = load(args)  # type: ignore[arg-type]
    port: int = args.port  # type: ignore[attr-defined]
    link = PeerLink(str(inst.control_socket))
    blocker = open_blocker(cfg)
    if cfg.blocker.backend == "rados":
        await publish_client(blocker, str(inst.run_dir / CLIENTS_DIR), port)
    peer = DirectBlockerPeer(link, port, blocker, max_inflight=cfg.peers.max_inflight)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, peer.stop)

    async def watch_registry() -> None:
        while link.registry_alive():
            await asyncio.sleep(0.5)
        log.warning("registry gone: stopping")
        peer.stop()

    watcher = loop.create_task(watch_registry())
    log.info("blocker peer (%s backend) serving port %d", cfg.blocker.backend, port)
    try:
        await peer.serve()
    finally:
        watcher.cancel()
        await blocker.close()
        peer.close()
        link.close()
    log.info("blocker peer on port %d stopped (%d requests served)", port, peer.served)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Process entry point."""
    p = child_args("blocker-peer")
    p.add_argument("--port", type=int, required=True)
    return run_child("blocker-peer", p.parse_args(argv), serve)


if __name__ == "__main__":
    sys.exit(main())
