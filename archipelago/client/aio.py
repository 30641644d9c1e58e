"""The asyncio client: requests on the caller's loop; large I/O split and issued concurrently."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from archipelago.client.common import (
    BLOCK_SIZE,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_TIMEOUT,
    EXTENT_WINDOW,
    MAPPER_PORT,
    STALE,
    _extents,
    _hashes_bin,
    _hashes_hex,
    _info,
    _instance,
    _link,
    _Ops,
    _unpack,
    block_placement,
    check_hex,
)
from archipelago.errors import NotFound, PeerDied
from archipelago.instance import Instance
from archipelago.mapper.common import Extent, VolumeInfo
from archipelago.peers.client import AsyncClient as _AsyncPeerClient
from archipelago.peers.ops import Flag, Op
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Reply


class AsyncClient:
    """Asyncio client (create with ``await AsyncClient.connect(...)`` inside a loop)."""

    def __init__(self, inst: Instance, link: PeerLink, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.instance = inst
        self.link = link
        self.peer = _AsyncPeerClient(link)
        self.timeout = timeout
        self.max_buffer = link.segment.max_buffer
        self._blockers: list[int] | None = None

    @classmethod
    async def connect(cls, instance: Instance | str | os.PathLike[str] | None = None,
                      timeout: float = DEFAULT_TIMEOUT) -> AsyncClient:
        """Connect to the daemon of an instance."""
        inst = _instance(instance)
        link = await asyncio.to_thread(_link, inst)
        return cls(inst, link, timeout)

    async def call(self, op: Op, target: str = "", offset: int = 0, size: int = 0,
                   payload: bytes | memoryview | None = None, flags: int = 0) -> Reply:
        """One raw request to the mapper peer (release the Reply)."""
        return await self.peer.call(MAPPER_PORT, op, target, offset, size, payload, flags,
                                    timeout=self.timeout)

    async def ctrl(self, op: str, **kw: Any) -> Any:
        """One volume op; returns its decoded result."""
        return _unpack(await self.call(Op.CTRL, payload=_Ops.args(op, **kw)))

    async def ping(self) -> None:
        """Round-trip to the mapper peer."""
        await self.peer.ping(MAPPER_PORT, timeout=self.timeout)

    async def create(self, name: str, size: int,
                     block_size: int = DEFAULT_BLOCK_SIZE) -> VolumeInfo:
        """Create an empty volume."""
        return _info(await self.ctrl("create", name=name, size=size, block_size=block_size))

    async def info(self, name: str) -> VolumeInfo:
        """Describe a volume."""
        return _info(await self.ctrl("info", name=name))

    async def list(self) -> list[VolumeInfo]:
        """Every volume and snapshot."""
        return [_info(d) for d in await self.ctrl("list")]

    async def snapshot(self, volume: str, snap: str) -> VolumeInfo:
        """Read-only snapshot."""
        return _info(await self.ctrl("snapshot", volume=volume, snap=snap))

    async def clone(self, source: str, new: str, size: int | None = None) -> VolumeInfo:
        """Writable clone of a read-only map."""
        return _info(await self.ctrl("clone", source=source, new=new, size=size))

    async def clone_hashmap(self, new: str, hashes: list[str], nbytes: int,
                            size: int | None = None, readonly: bool = False) -> VolumeInfo:
        """Volume over stored content blocks."""
        return _info(await self.ctrl("clone_hashmap", new=new, hashes=_hashes_bin(hashes),
                                     nbytes=nbytes, size=size, readonly=readonly))

    async def hash(self, snap: str) -> VolumeInfo:
        """Content-addressed copy of a read-only map."""
        return _info(await self.ctrl("hash", snap=snap))

    async def hashmap(self, name: str) -> tuple[list[str], int]:
        """(block hashes, bytes) of a content-addressed map."""
        d = await self.ctrl("hashmap", name=name)
        return _hashes_hex(d["hashes"]), int(d["bytes"])

    async def usage(self, name: str) -> dict[str, Any]:
        """Block counts of a map (archipelago.mapper.usage): used, owned, shared, distinct."""
        return dict(await self.ctrl("usage", name=name))

    async def resize(self, name: str, size: int) -> VolumeInfo:
        """Grow or shrink."""
        return _info(await self.ctrl("resize", name=name, size=size))

    async def rename(self, old: str, new: str) -> VolumeInfo:
        """Rename a volume that is not open."""
        return _info(await self.ctrl("rename", old=old, new=new))

    async def remove(self, name: str) -> None:
        """Remove a volume or snapshot."""
        await self.ctrl("remove", name=name)

    async def lock(self, name: str) -> None:
        """Take the volume's lock for the daemon."""
        await self.ctrl("lock", name=name)

    async def unlock(self, name: str, force: bool = False) -> None:
        """Release the volume's lock."""
        await self.ctrl("unlock", name=name, force=force)

    async def status(self) -> dict[str, Any]:
        """The mapper peer's status."""
        return dict(await self.ctrl("status"))

    async def missing(self, names: list[str]) -> list[str]:
        """Content names not stored yet."""
        return list(await self.ctrl("missing", names=names))

    async def put_block(self, name: str, data: bytes | memoryview) -> bool:
        """Store a content block unless present; True if new."""
        r = await self.call(Op.CREATE, name, 0, len(data), data)
        r.release()
        return bool(r.arg)

    async def _block_call(self, name: str, op: Op, offset: int = 0, size: int = 0,
                          payload: bytes | memoryview | None = None, arg: int = 0,
                          retry_for: float = 30.0) -> Reply:
        """One request to the blocker peer owning content block ``name``."""
        check_hex(name)
        if self._blockers is None:
            self._blockers = [int(b["port"]) for b in (await self.status())["blockers"]]
        port = self._blockers[block_placement(name, len(self._blockers))]
        deadline = time.monotonic() + retry_for
        while True:
            try:
                return await self.peer.call(port, op, name, offset, size, payload, arg=arg,
                                            timeout=self.timeout)
            except PeerDied:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def store_block(self, name: str, data: bytes | memoryview) -> bool:
        """Store a content block straight on its blocker peer unless present; True if new."""
        try:
            (await self._block_call(name, Op.INFO)).release()
            return False
        except NotFound:
            pass
        (await self._block_call(name, Op.CREATE, 0, len(data), data, arg=len(data))).release()
        return True

    async def read_block(self, name: str, offset: int = 0, size: int = BLOCK_SIZE) -> bytes:
        """Read a content block straight from its blocker peer."""
        return (await self._block_call(name, Op.READ, offset, size)).bytes()

    async def open(self, name: str, force: bool = False) -> AsyncVolumeHandle:
        """Open a volume."""
        d = await self.ctrl("open", name=name, force=force)
        return AsyncVolumeHandle(self, int(d["handle"]), _info(d["info"]), force)

    def close(self) -> None:
        """Release the port and the link."""
        self.peer.close()
        self.link.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class AsyncVolumeHandle:
    """An open volume (asyncio); pieces of large requests are issued concurrently.

    Like the blocking VolumeHandle, it reopens the volume on a restarted mapper peer
    (within ``reopen_for`` seconds) and re-issues the idempotent request.
    """

    def __init__(self, client: AsyncClient, handle: int, info: VolumeInfo, force: bool = False,
                 reopen_for: float = 30.0) -> None:
        self.client = client
        self.handle = handle
        self.info = info
        self.name = info.name
        self.closed = False
        self.force = force
        self.reopen_for = reopen_for
        self.reopened = 0
        self._reopening: asyncio.Lock = asyncio.Lock()

    async def _io(self, op: Op, offset: int = 0, size: int = 0,
                  payload: bytes | memoryview | None = None, flags: int = 0) -> Reply:
        generation = self.reopened  # handle ids restart with the mapper: count reopens
        try:
            return await self.client.call(op, self.name, offset, size, payload, flags)
        except (PeerDied, NotFound) as e:
            if self.closed or self.reopen_for <= 0 or (
                    isinstance(e, NotFound) and STALE not in e.message):
                raise
        async with self._reopening:  # concurrent pieces reopen once
            if self.reopened == generation:
                await self._reopen()
        return await self.client.call(op, self.name, offset, size, payload, flags)

    async def _reopen(self) -> None:
        """Open the volume again on a restarted mapper peer."""
        deadline = time.monotonic() + self.reopen_for
        while True:
            try:
                d = await self.client.ctrl("open", name=self.name, force=self.force)
                break
            except PeerDied:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        self.handle, self.info = int(d["handle"]), _info(d["info"])
        self.reopened += 1

    @property
    def size(self) -> int:
        """Size in bytes (as of open)."""
        return self.info.size

    async def readinto(self, offset: int, buf: memoryview | bytearray) -> None:
        """Fill ``buf`` from ``offset``."""
        mv = memoryview(buf).cast("B")
        step = self.client.max_buffer

        async def one(o: int) -> None:
            n = min(step, len(mv) - o)
            with await self._io(Op.READ, offset + o, n) as r:
                mv[o : o + n] = r.data

        await asyncio.gather(*(one(o) for o in range(0, len(mv), step)))

    async def read_reply(self, offset: int, size: int) -> Reply:
        """Zero-copy read of at most ``max_buffer`` bytes: ``reply.data`` is a view of the
        segment buffer; ``release()`` the Reply (or use ``with``)."""
        return await self._io(Op.READ, offset, size)

    async def read(self, offset: int, size: int) -> bytearray:
        """Read ``size`` bytes."""
        out = bytearray(size)
        await self.readinto(offset, out)
        return out

    async def write(self, offset: int, data: bytes | bytearray | memoryview,
                    fua: bool = False) -> None:
        """Write (durable on return with ``fua``)."""
        mv = memoryview(data).cast("B")
        step, flags = self.client.max_buffer, Flag.FUA if fua else 0
        replies = await asyncio.gather(*(
            self._io(Op.WRITE, offset + o, len(mv[o : o + step]),
                             mv[o : o + step], flags) for o in range(0, len(mv), step)))
        for r in replies:
            r.release()

    async def zero(self, offset: int, size: int, fua: bool = False) -> None:
        """Make a range read as zeros."""
        (await self._io(Op.ZERO, offset, size,
                                flags=Flag.FUA if fua else 0)).release()

    async def trim(self, offset: int, size: int, fua: bool = False) -> None:
        """Discard a range."""
        (await self._io(Op.TRIM, offset, size,
                                flags=Flag.FUA if fua else 0)).release()

    async def flush(self) -> None:
        """Make written data and map entries durable."""
        (await self._io(Op.FLUSH)).release()

    async def extents(self, offset: int = 0, size: int | None = None) -> list[Extent]:
        """Data/zero extents of a range."""
        end = self.size if size is None else offset + size
        out: list[Extent] = []
        while offset < end:
            n = min(EXTENT_WINDOW, end - offset)
            out += _extents((await self._io(Op.EXTENTS, offset, n)).bytes())
            offset += n
        return out

    async def close(self) -> None:
        """Flush and close."""
        if not self.closed:
            self.closed = True
            try:
                await self.client.ctrl("close", handle=self.handle)
            except NotFound:
                pass  # the mapper peer restarted since: nothing of ours is open there

    async def __aenter__(self) -> AsyncVolumeHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
