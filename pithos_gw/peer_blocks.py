"""Gateway blocks through the daemon: a Blocker-shaped adapter over the blocker peers.

When the archipelago daemon serves the instance, the gateway does not open the
blocker itself: every content block goes to the blocker peer that owns it (the
mapper's placement rule, ``block_placement``) over the shared-memory segment,
exactly where the client library's ``store_block``/``read_block`` put it. Only the
calls the gateway's BlockStore makes are supported (read/put/size/exists/flush);
the rest raise NotSupported, because the gateway never needs them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from archipelago.blocker.base import Blocker, LockInfo, check_range
from archipelago.client import AsyncClient
from archipelago.errors import NotFound, NotRunning, NotSupported, PeerDied
from archipelago.instance import Instance
from archipelago.peers.ops import Flag, Op
from archipelago.peers.request import Reply
from archipelago.peers.retry import retry_async
from archipelago.wire import block_placement, check_hex

log = logging.getLogger("pithos_gw")
#: How long a request is retried while its blocker peer restarts (the supervisor restarts it).
RETRY_FOR = 30.0
#: How long a call waits for a restarted daemon that is still starting its peers.
RECONNECT_WAIT = 5.0
#: Existence checks in flight at once when looking for missing blocks.
MISSING_BATCH = 256


@dataclass(eq=False)
class _Conn:
    """One connection to a daemon: its client, blocker ports and the calls using it."""

    client: AsyncClient
    ports: list[int]
    users: int = 0
    stale: bool = False  # the daemon went away: no new call uses this connection
    dirty: bool = False  # blocks were put without FUA since the last flush

    def close(self) -> None:
        """Release the port and the link (unmaps the segment: only once nobody uses it)."""
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - the daemon is gone already
            pass


class PeerBlocks(Blocker):
    """Content blocks on the daemon's blocker peers (create with ``await PeerBlocks.open``).

    A restarted daemon is a new segment: when the old one's registry hangs up, the next
    call connects to the new daemon; while none runs, calls fail at once with NotRunning
    (503) instead of waiting for replies that cannot come.
    """

    kind = "peers"

    def __init__(self, inst: Instance, client: AsyncClient, ports: list[int]) -> None:
        self.inst = inst
        self._conn = self._watch(_Conn(client, ports))
        self._reconnecting = asyncio.Lock()
        self._unsynced = False

    @property
    def client(self) -> AsyncClient:
        """The current daemon client."""
        return self._conn.client

    @property
    def ports(self) -> list[int]:
        """The current daemon's blocker ports."""
        return self._conn.ports

    @property
    def step(self) -> int:
        """Largest request payload (the arena's largest buffer)."""
        return self._conn.client.max_buffer

    @staticmethod
    async def _connect(inst: Instance, wait: float) -> tuple[AsyncClient, list[int]]:
        from archipelago.client import start_command

        if not inst.daemon_running():
            raise NotRunning(f"no archipelago daemon serves {inst.data_dir} "
                             f"(start it with: {start_command(inst)} --gateway)")
        deadline = time.monotonic() + wait
        while True:
            client: AsyncClient | None = None
            try:
                client = await AsyncClient.connect(inst, timeout=60.0)
                ports = [int(b["port"]) for b in (await client.status())["blockers"]]
                if ports:
                    return client, ports
            except (NotRunning, PeerDied):
                if time.monotonic() > deadline:
                    if client is not None:
                        client.close()
                    raise
            if client is not None:
                client.close()
            if time.monotonic() > deadline:
                raise NotRunning(f"the daemon of {inst.data_dir} has no blocker peers")
            await asyncio.sleep(0.1)

    @classmethod
    async def open(cls, inst: Instance, wait: float = 30.0) -> PeerBlocks:
        """Connect to the daemon of ``inst``; waits up to ``wait`` s for its peers to be up."""
        return cls(inst, *await cls._connect(inst, wait))

    def _watch(self, conn: _Conn) -> _Conn:
        def hangup() -> None:
            conn.stale = True
            if conn.users == 0 and conn is not self._conn:
                conn.close()

        conn.client.link.on_hangup(asyncio.get_running_loop(), hangup)
        return conn

    async def _current(self) -> _Conn:
        """The live connection, reconnecting once the daemon was restarted."""
        conn = self._conn
        if not conn.stale:
            return conn
        async with self._reconnecting:
            if self._conn is conn:
                # A daemon starting up gets a few seconds; none running: NotRunning at once.
                client, ports = await self._connect(self.inst, wait=RECONNECT_WAIT)
                self._conn = self._watch(_Conn(client, ports))
                self._unsynced = self._unsynced or conn.dirty
                log.info("reconnected to the restarted daemon of %s", self.inst.data_dir)
                if conn.users == 0:
                    conn.close()
            return self._conn

    def _port(self, conn: _Conn, name: str) -> int:
        return conn.ports[block_placement(check_hex(name), len(conn.ports))]

    async def _call(self, op: Op, name: str, port: int | None = None, **kw: Any) -> Reply:
        """One request to the blocker peer owning ``name`` (or ``port``); retried while that
        peer restarts or the daemon is replaced (every op here is idempotent)."""
        async def attempt() -> Reply:
            conn = await self._current()
            conn.users += 1
            try:
                dst = (self._port(conn, name) if port is None
                       else conn.ports[port % len(conn.ports)])
                if op == Op.CREATE:
                    conn.dirty = True
                return await conn.client.peer.call(dst, op, name,
                                                   timeout=conn.client.timeout, **kw)
            finally:
                conn.users -= 1
                if conn.stale and conn.users == 0 and conn is not self._conn:
                    conn.close()

        return await retry_async(attempt, RETRY_FOR)

    async def read(self, name: str, offset: int, size: int) -> bytes:
        """``size`` bytes of block ``name`` from ``offset`` (short at the object's end)."""
        check_range(offset, size)
        if size <= self.step:
            return (await self._call(Op.READ, name, offset=offset, size=size)).bytes()
        parts = await asyncio.gather(*(
            self._call(Op.READ, name, offset=offset + o, size=min(self.step, size - o))
            for o in range(0, size, self.step)))
        return b"".join(r.bytes() for r in parts)

    async def read_existing(self, name: str, offset: int, size: int) -> bytes:
        """Like :meth:`read`, but NotFound when the block is absent."""
        check_range(offset, size)
        parts = await asyncio.gather(*(
            self._call(Op.READ, name, offset=offset + o, size=min(self.step, size - o),
                       flags=Flag.MUST_EXIST)
            for o in range(0, max(size, 1), self.step)))
        return b"".join(r.bytes() for r in parts)

    async def put(self, name: str, data: bytes | memoryview, fua: bool = True) -> None:
        """Store the whole block (parts the peer stages when above the arena's buffer)."""
        mv = memoryview(data).cast("B")
        total, flags = len(mv), Flag.FUA if fua else 0
        parts = range(0, total, self.step) if total else range(1)
        replies = await asyncio.gather(*(
            self._call(Op.CREATE, name, offset=o, size=len(mv[o : o + self.step]),
                       payload=mv[o : o + self.step], flags=flags, arg=total) for o in parts))
        for r in replies:
            r.release()

    async def size(self, name: str) -> int:
        """Stored size of block ``name``; NotFound when absent."""
        r = await self._call(Op.INFO, name)
        r.release()
        return int(r.arg)

    async def exists(self, name: str) -> bool:
        """True when block ``name`` is stored."""
        try:
            await self.size(name)
        except NotFound:
            return False
        return True

    async def touch(self, name: str) -> bool:
        """True when block ``name`` is stored, made young again (garbage collection)."""
        try:
            (await self._call(Op.INFO, name, flags=Flag.TOUCH)).release()
        except NotFound:
            return False
        return True

    async def missing(self, names: list[str]) -> list[str]:
        """The names not stored, in order: existence checks issued together, in large
        batches (the peers queue up to ``max_inflight`` each; the rest waits in the segment)."""
        out: list[str] = []
        for i in range(0, len(names), MISSING_BATCH):
            batch = names[i : i + MISSING_BATCH]
            found = await asyncio.gather(*(self.touch(n) for n in batch))
            out += [n for n, ok in zip(batch, found, strict=True) if not ok]
        return out

    async def flush(self) -> None:
        """Barrier on every blocker peer: blocks put without FUA become durable."""
        if self._unsynced:
            # Blocks went to a daemon that is gone before any barrier: their durability is
            # unknown, so the upload that wrote them must fail rather than record a map.
            self._unsynced = False
            raise PeerDied("the daemon restarted before the uploaded blocks were flushed")
        conn = await self._current()
        conn.dirty = False
        try:
            replies = await asyncio.gather(*(self._call(Op.FLUSH, "", port=i)
                                             for i in range(len(conn.ports))))
        except BaseException:
            conn.dirty = True
            raise
        for r in replies:
            r.release()

    async def close(self) -> None:
        """Release the client's port and link (the peers keep running)."""
        self._conn.close()

    async def write(self, name: str, offset: int, data: bytes | memoryview,
                    fua: bool = False) -> None:
        """Not used by the gateway (blocks are immutable)."""
        raise NotSupported("the gateway never overwrites a content block")

    async def copy(self, src: str, dst: str, fua: bool = False) -> None:
        """Not used by the gateway."""
        raise NotSupported("copy is not available through the gateway's block adapter")

    async def delete(self, name: str) -> None:
        """Not used by the gateway (blocks may be shared with volumes)."""
        raise NotSupported("the gateway never deletes a content block")

    async def list(self, prefix: str = "") -> list[str]:
        """Not used by the gateway."""
        raise NotSupported("list is not available through the gateway's block adapter")

    async def hash(self, name: str) -> str:
        """Not used by the gateway."""
        raise NotSupported("hash is not available through the gateway's block adapter")

    async def lock(self, name: str, owner: str, wait: bool = False,
                   timeout: float | None = None) -> None:
        """Not used by the gateway."""
        raise NotSupported("locks are not available through the gateway's block adapter")

    async def unlock(self, name: str, owner: str, force: bool = False) -> None:
        """Not used by the gateway."""
        raise NotSupported("locks are not available through the gateway's block adapter")

    async def lock_info(self, name: str) -> LockInfo | None:
        """Not used by the gateway."""
        raise NotSupported("locks are not available through the gateway's block adapter")
