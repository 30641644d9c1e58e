"""The Blocker contract over the segment: ``BlockerPeer`` serves a local Blocker on a port,
``RemoteBlocker`` is a Blocker whose every call is a request to such a peer.

Wire mapping: READ/WRITE (FUA flag) split at the arena's largest buffer (READ with
MUST_EXIST = read_existing); CREATE = put
(parts staged by the peer until ``arg`` bytes arrived, then one atomic put); COPY
(target = dst, payload = src); DELETE; INFO (arg = size); LIST (msgpack page of names,
offset = start, arg = 1 when more); FLUSH; HASH (reply = hex name); ACQUIRE/RELEASE
(msgpack {owner, wait, timeout, force}); CTRL {"op": "lock_info"} (msgpack LockInfo or nil).

Fenced mutations (WRITE, CREATE, COPY, DELETE sent while ``FENCE`` is set: the mapper
peer's writes on the file backend) carry the writer's fence in the target, flag FENCED;
the blocker peer runs them through its own ``Blocker.fenced_op``, so the generation is
checked by the process that does the syscall, under the fence's lock, whatever became
of the sender meanwhile (docs/fencing.md).
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import asdict
from typing import Any

import msgpack

from archipelago.blocker.base import Blocker, LockInfo, check_name, check_range
from archipelago.errors import InvalidArgument, NotFound
from archipelago.peers.client import AsyncClient
from archipelago.peers.ops import Flag, Op
from archipelago.peers.peer import Peer
from archipelago.peers.port import Port
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Request

LIST_PAGE = 2000
#: (map key, generation) of the fenced mutation being sent from this task, or None.
FENCE: ContextVar[tuple[str, int] | None] = ContextVar("fence", default=None)
_MUTATIONS = (Op.WRITE, Op.CREATE, Op.COPY, Op.DELETE)


def on_wire(op: Op, name: str, flags: int) -> tuple[str, int]:
    """Target and flags of a request on ``name``: a mutation sent under FENCE carries it
    ("\n" never occurs in object or map names)."""
    fence = FENCE.get()
    if fence is None or op not in _MUTATIONS:
        return name, flags
    return f"{name}\n{fence[0]}\n{fence[1]}", flags | Flag.FENCED


def off_wire(req: Request) -> tuple[str, tuple[str, int] | None]:
    """(object name, fence or None) of a request."""
    if not req.flags & Flag.FENCED:
        return req.target, None
    name, key, gen = req.target.split("\n")
    return name, (key, int(gen))


class BlockerPeer(Peer):
    """Serve ``blocker`` on ``port`` (the blocker is closed by the caller)."""

    role = "blocker"

    def __init__(self, link: PeerLink, port: int | Port | None, blocker: Blocker,
                 max_inflight: int = 64) -> None:
        super().__init__(link, port, max_inflight)
        self.blocker = blocker
        self._staged: dict[tuple[int, str], tuple[bytearray, int]] = {}

    async def _mutate(self, fence: tuple[str, int] | None, op: str, *args: Any) -> None:
        if fence is None:
            await getattr(self.blocker, op)(*args)
        else:
            await self.blocker.fenced_op(fence[0], fence[1], op, *args)

    async def dispatch(self, req: Request) -> None:
        """Translate one request into a Blocker call."""
        b, op = self.blocker, req.op
        name, fence = off_wire(req)
        fua = bool(req.flags & Flag.FUA)
        if op == Op.READ:
            read = b.read_existing if req.flags & Flag.MUST_EXIST else b.read
            req.reply(await read(name, req.offset, req.size))
        elif op == Op.WRITE:
            await self._mutate(fence, "write", name, req.offset, req.data, fua)
            req.reply(serviced=len(req.data))
        elif op == Op.CREATE:
            await self._put(req, name, fence)
        elif op == Op.COPY:
            await self._mutate(fence, "copy", bytes(req.data).decode(), name, fua)
        elif op == Op.DELETE:
            await self._mutate(fence, "delete", name)
        elif op == Op.INFO:
            if req.flags & Flag.TOUCH and not await b.touch(name):
                raise NotFound(f"object {name!r} not found")
            req.reply(arg=await b.size(name))
        elif op == Op.LIST:
            names = await b.list(name)
            page = names[req.offset : req.offset + LIST_PAGE]
            req.reply(msgpack.packb(page), arg=int(req.offset + LIST_PAGE < len(names)))
        elif op == Op.FLUSH:
            await b.flush()
        elif op == Op.HASH:
            req.reply((await b.hash(name)).encode())
        elif op in (Op.ACQUIRE, Op.RELEASE, Op.CTRL):
            await self._control(req, msgpack.unpackb(bytes(req.data)) if len(req.data) else {})
        else:
            raise InvalidArgument(f"blocker peer does not do {op.name}")

    async def _put(self, req: Request, name: str, fence: tuple[str, int] | None) -> None:
        total, fua = req.arg, bool(req.flags & Flag.FUA)
        if req.offset == 0 and len(req.data) == total:
            await self._mutate(fence, "put", name, req.data, fua)
            return
        key = (req.src, name)
        buf, got = self._staged.get(key, (bytearray(total), 0))
        buf[req.offset : req.offset + len(req.data)] = req.data
        got += len(req.data)
        if got < total:
            self._staged[key] = (buf, got)
            req.reply(arg=0)
            return
        self._staged.pop(key, None)
        await self._mutate(fence, "put", name, buf, fua)
        req.reply(arg=1)

    async def _control(self, req: Request, args: dict[str, Any]) -> None:
        b, name = self.blocker, req.target
        if req.op == Op.ACQUIRE:
            await b.lock(name, args["owner"], args.get("wait", False), args.get("timeout"))
        elif req.op == Op.RELEASE:
            await b.unlock(name, args["owner"], args.get("force", False))
        elif args.get("op") == "lock_info":
            info = await b.lock_info(name)
            req.reply(msgpack.packb(asdict(info) if info else None))
        else:
            raise InvalidArgument(f"unknown control op {args.get('op')!r}")


class RemoteBlocker(Blocker):
    """A Blocker served by a BlockerPeer on port ``dst`` (create inside the event loop)."""

    kind = "remote"

    def __init__(self, client: AsyncClient, dst: int) -> None:
        self.client = client
        self.dst = dst
        self.step = client.seg.max_buffer

    async def _call(self, op: Op, name: str, flags: int = 0, **kw: Any) -> Any:
        target, flags = on_wire(op, name, flags)
        return await self.client.call(self.dst, op, target, flags=flags, **kw)

    async def read(self, name: str, offset: int, size: int) -> bytes:
        """Read (split into arena-sized requests issued concurrently)."""
        check_name(name)
        check_range(offset, size)
        if size <= self.step:
            return (await self._call(Op.READ, name, offset=offset, size=size)).bytes()
        return bytes(await self.client.read(self.dst, name, offset, size))

    async def read_existing(self, name: str, offset: int, size: int) -> bytes:
        """Read; NotFound if the object is absent (the peer checks: one request)."""
        check_name(name)
        check_range(offset, size)
        if size <= self.step:
            return (await self._call(Op.READ, name, offset=offset, size=size,
                                     flags=Flag.MUST_EXIST)).bytes()
        return bytes(await self.client.read(self.dst, name, offset, size, Flag.MUST_EXIST))

    async def write(self, name: str, offset: int, data: bytes | memoryview,
                    fua: bool = False) -> None:
        """Write (split like read); the peer's blocker reads straight from the segment."""
        check_name(name)
        check_range(offset, len(data))
        flags = Flag.FUA if fua else 0
        if len(data) <= self.step:
            (await self._call(Op.WRITE, name, offset=offset, size=len(data), payload=data,
                              flags=flags)).release()
        else:
            target, flags = on_wire(Op.WRITE, name, flags)
            await self.client.write(self.dst, target, offset, data, flags)

    async def put(self, name: str, data: bytes | memoryview, fua: bool = True) -> None:
        """Atomic replace; large objects travel in parts the peer stages, then puts once."""
        check_name(name)
        mv = memoryview(data).cast("B")
        check_range(0, len(mv))
        flags, total = (Flag.FUA if fua else 0), len(mv)
        parts = range(0, total, self.step) if total else range(1)
        replies = await asyncio.gather(*(
            self._call(Op.CREATE, name, offset=o, size=len(mv[o : o + self.step]),
                       payload=mv[o : o + self.step], flags=flags, arg=total) for o in parts))
        for r in replies:
            r.release()

    async def copy(self, src: str, dst: str, fua: bool = False) -> None:
        """Server-side copy."""
        check_name(src)
        check_name(dst)
        (await self._call(Op.COPY, dst, payload=src.encode(),
                          flags=Flag.FUA if fua else 0)).release()

    async def delete(self, name: str) -> None:
        """Delete; NotFound if absent."""
        (await self._call(Op.DELETE, check_name(name))).release()

    async def size(self, name: str) -> int:
        """Object size; NotFound if absent."""
        r = await self._call(Op.INFO, check_name(name))
        r.release()
        return r.arg

    async def touch(self, name: str) -> bool:
        """True if the object exists, made young again (INFO with TOUCH)."""
        try:
            (await self._call(Op.INFO, check_name(name), flags=Flag.TOUCH)).release()
        except NotFound:
            return False
        return True

    async def list(self, prefix: str = "") -> list[str]:
        """Sorted names with ``prefix`` (fetched in pages)."""
        out: list[str] = []
        while True:
            r = await self._call(Op.LIST, prefix, offset=len(out), buf_size=4 * 1024 * 1024)
            out.extend(msgpack.unpackb(bytes(r.data)))
            more = r.arg
            r.release()
            if not more:
                return out

    async def flush(self) -> None:
        """Flush the peer's blocker."""
        (await self._call(Op.FLUSH, "")).release()

    async def hash(self, name: str) -> str:
        """Content-address ``name`` on the peer; returns its Pithos name."""
        return (await self._call(Op.HASH, check_name(name))).bytes().decode()

    async def lock(self, name: str, owner: str, wait: bool = False,
                   timeout: float | None = None) -> None:
        """Exclusive lock held by ``owner``."""
        args = msgpack.packb({"owner": owner, "wait": wait, "timeout": timeout})
        (await self._call(Op.ACQUIRE, name, payload=args)).release()

    async def unlock(self, name: str, owner: str, force: bool = False) -> None:
        """Release the lock."""
        args = msgpack.packb({"owner": owner, "force": force})
        (await self._call(Op.RELEASE, name, payload=args)).release()

    async def lock_info(self, name: str) -> LockInfo | None:
        """Lock holder, or None."""
        r = await self._call(Op.CTRL, name, payload=msgpack.packb({"op": "lock_info"}),
                             buf_size=4096)
        info = msgpack.unpackb(bytes(r.data))
        r.release()
        return LockInfo(**info) if info else None
