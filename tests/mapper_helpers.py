"""Helpers for the mapper tests: reference checks and a crash-recording blocker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from archipelago.blocker.base import Blocker, LockInfo
from archipelago.blocker.memory import MemoryBlocker, MemoryStore
from archipelago.mapper import Mapper
from archipelago.mapper.chunks import load_chunk
from archipelago.mapper.format import ENTRY_SIZE, ZERO, chunks_of

KiB = 1024
MiB = 1024 * KiB


async def referenced_objects(m: Mapper) -> dict[str, set[str]]:
    """Every object name each live map refers to (read from the store, no caches)."""
    out: dict[str, set[str]] = {}
    for vi in await m.list():
        h = await m.live(vi.name)
        names: set[str] = set()
        for c in range(chunks_of(h.nblocks)):
            buf = await load_chunk(m.blocker, h, c)
            for j in range(min(4096, h.nblocks - c * 4096)):
                kind = buf[j * ENTRY_SIZE]
                if kind != ZERO:
                    names.add(h.name_of(kind, bytes(buf[j * ENTRY_SIZE + 1 : (j + 1) * ENTRY_SIZE])))
        out[vi.name] = names
    return out


async def missing_objects(m: Mapper) -> list[tuple[str, str]]:
    """(map, object) pairs where a live map names an object that does not exist."""
    missing = []
    for vol, names in (await referenced_objects(m)).items():
        for n in sorted(names):
            if not await m.blocker.exists(n):
                missing.append((vol, n))
    return missing


@dataclass
class Op:
    """One mutating blocker operation as the store saw it."""

    kind: str  # write | put | copy | delete | flush
    name: str = ""
    src: str = ""
    offset: int = 0
    data: bytes = b""
    fua: bool = False


@dataclass
class RecordingBlocker(Blocker):
    """A memory blocker that logs every mutating operation, to replay crash prefixes."""

    inner: MemoryBlocker = field(default_factory=MemoryBlocker)
    log: list[Op] = field(default_factory=list)
    kind = "recording"

    async def read(self, name: str, offset: int, size: int) -> bytes:
        """Read from the live state."""
        return await self.inner.read(name, offset, size)

    async def write(self, name: str, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        """Write and log."""
        await self.inner.write(name, offset, data, fua)
        self.log.append(Op("write", name, offset=offset, data=bytes(data), fua=fua))

    async def put(self, name: str, data: bytes | memoryview, fua: bool = True) -> None:
        """Put and log."""
        await self.inner.put(name, data, fua)
        self.log.append(Op("put", name, data=bytes(data), fua=fua))

    async def copy(self, src: str, dst: str, fua: bool = False) -> None:
        """Copy and log."""
        await self.inner.copy(src, dst, fua)
        self.log.append(Op("copy", dst, src=src, fua=fua))

    async def delete(self, name: str) -> None:
        """Delete and log."""
        await self.inner.delete(name)
        self.log.append(Op("delete", name))

    async def size(self, name: str) -> int:
        """Size in the live state."""
        return await self.inner.size(name)

    async def list(self, prefix: str = "") -> list[str]:
        """List the live state."""
        return await self.inner.list(prefix)

    async def flush(self) -> None:
        """Log a flush barrier."""
        self.log.append(Op("flush"))

    async def hash(self, name: str) -> str:
        """Hash; a newly stored content copy is logged as a (non-FUA) put."""
        content = await self.inner.hash(name)
        if content not in {op.name for op in self.log if op.kind == "put"}:
            data = bytes(self.inner.store.objects.get(content, b""))
            if data:
                self.log.append(Op("put", content, data=data, fua=False))
        return content

    async def lock(self, name: str, owner: str, wait: bool = False, timeout: float | None = None) -> None:
        """Locks are not persisted across the simulated crash."""
        await self.inner.lock(name, owner, wait, timeout)

    async def unlock(self, name: str, owner: str, force: bool = False) -> None:
        """Release a lock."""
        await self.inner.unlock(name, owner, force)

    async def lock_info(self, name: str) -> LockInfo | None:
        """Lock holder."""
        return await self.inner.lock_info(name)

    def crashed(self, base: MemoryStore, k: int, strict: bool) -> MemoryStore:
        """The store after a crash once k ops were issued.

        Not strict: every one of the first k ops persisted (prefix). Strict: only the
        ops made durable before the crash persisted -- FUA ops, ops followed by a
        flush, and earlier ops on an object a later FUA op synced.
        """
        ops = self.log[:k]
        keep = [True] * len(ops)
        if strict:
            for j, op in enumerate(ops):
                later = ops[j + 1 :]
                keep[j] = op.kind == "flush" or op.fua or any(
                    o.kind == "flush" or (o.fua and o.name == op.name) for o in later
                )
        store = MemoryStore({n: bytearray(v) for n, v in base.objects.items()}, {})
        objs = store.objects
        for op, kept in zip(ops, keep, strict=True):
            if not kept:
                continue
            if op.kind == "write":
                obj = objs.setdefault(op.name, bytearray())
                end = op.offset + len(op.data)
                if op.data and len(obj) < end:
                    obj.extend(bytes(end - len(obj)))
                obj[op.offset : end] = op.data
            elif op.kind == "put":
                objs[op.name] = bytearray(op.data)
            elif op.kind == "copy":
                if op.src in objs:
                    objs[op.name] = bytearray(objs[op.src])
            elif op.kind == "delete":
                objs.pop(op.name, None)
        return store


class GatedBlocker(Blocker):
    """Delegates to another blocker, counting ops and pausing chosen ones at a gate."""

    def __init__(self, inner: Blocker) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.counts: dict[str, int] = {}
        self.gate_op: str | None = None
        self.gate_prefix = ""
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def arm(self, op: str, prefix: str = "") -> None:
        """Pause the next ``op`` on a name starting with ``prefix`` until release is set."""
        self.gate_op, self.gate_prefix = op, prefix
        self.reached.clear()
        self.release.clear()

    async def _pass(self, op: str, name: str = "") -> None:
        self.counts[op] = self.counts.get(op, 0) + 1
        if self.gate_op == op and name.startswith(self.gate_prefix):
            self.gate_op = None
            self.reached.set()
            await self.release.wait()

    async def read(self, name: str, offset: int, size: int) -> bytes:
        """Read."""
        await self._pass("read", name)
        return await self.inner.read(name, offset, size)

    async def write(self, name: str, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        """Write."""
        await self._pass("write", name)
        await self.inner.write(name, offset, data, fua)

    async def put(self, name: str, data: bytes | memoryview, fua: bool = True) -> None:
        """Put."""
        await self._pass("put", name)
        await self.inner.put(name, data, fua)

    async def copy(self, src: str, dst: str, fua: bool = False) -> None:
        """Copy."""
        await self._pass("copy", src)
        await self.inner.copy(src, dst, fua)

    async def delete(self, name: str) -> None:
        """Delete."""
        await self._pass("delete", name)
        await self.inner.delete(name)

    async def size(self, name: str) -> int:
        """Size."""
        await self._pass("size", name)
        return await self.inner.size(name)

    async def list(self, prefix: str = "") -> list[str]:
        """List."""
        await self._pass("list", prefix)
        return await self.inner.list(prefix)

    async def flush(self) -> None:
        """Flush."""
        await self._pass("flush")
        await self.inner.flush()

    async def hash(self, name: str) -> str:
        """Hash."""
        await self._pass("hash", name)
        return await self.inner.hash(name)

    async def lock(self, name: str, owner: str, wait: bool = False, timeout: float | None = None) -> None:
        """Lock."""
        await self.inner.lock(name, owner, wait, timeout)

    async def unlock(self, name: str, owner: str, force: bool = False) -> None:
        """Unlock."""
        await self.inner.unlock(name, owner, force)

    async def lock_info(self, name: str) -> LockInfo | None:
        """Lock holder."""
        return await self.inner.lock_info(name)
