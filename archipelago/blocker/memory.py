"""In-memory blocker for unit tests: the reference behaviour of the contract."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from archipelago.blocker.base import (
    Blocker,
    LockInfo,
    check_name,
    check_range,
    parse_owner,
)
from archipelago.errors import Fenced, Locked, NotFound
from archipelago.hashing import ZERO_HASH, block_hash, is_zero


@dataclass
class MemoryStore:
    """The state of a memory blocker; share one between blockers to "reopen" a store."""

    objects: dict[str, bytearray] = field(default_factory=dict)
    locks: dict[str, str] = field(default_factory=dict)
    fences: dict[str, int] = field(default_factory=dict)
    mtimes: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.time  # tests drive object ages with a fake clock


class MemoryBlocker(Blocker):
    """Objects in a dict; locks in another. State lives in ``store`` (a fresh one by default)."""

    kind = "memory"

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self._objects = self.store.objects
        self._locks = self.store.locks

    async def read(self, name: str, offset: int, size: int) -> bytes:
        """Read with zero fill past the end."""
        check_name(name)
        check_range(offset, size)
        obj = self._objects.get(name, b"")
        data = bytes(obj[offset : offset + size])
        return data + bytes(size - len(data))

    async def read_existing(self, name: str, offset: int, size: int) -> bytes:
        """Read with zero fill past the end; NotFound if the object is absent."""
        check_name(name)
        if name not in self._objects:
            raise NotFound(f"object {name!r} not found")
        return await self.read(name, offset, size)

    async def write(self, name: str, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        """Write, growing the object with zeros as needed."""
        check_name(name)
        check_range(offset, len(data))
        obj = self._objects.setdefault(name, bytearray())
        self.store.mtimes[name] = self.store.clock()
        end = offset + len(data)
        # An empty write creates the object but does not extend it (as pwrite and RADOS).
        if data and len(obj) < end:
            obj.extend(bytes(end - len(obj)))
        obj[offset:end] = data

    async def put(self, name: str, data: bytes | memoryview, fua: bool = True) -> None:
        """Replace the whole object."""
        check_name(name)
        check_range(0, len(data))
        self._objects[name] = bytearray(data)
        self.store.mtimes[name] = self.store.clock()

    async def copy(self, src: str, dst: str, fua: bool = False) -> None:
        """Copy src to dst."""
        check_name(src)
        check_name(dst)
        if src not in self._objects:
            raise NotFound(f"object {src!r} not found")
        self._objects[dst] = bytearray(self._objects[src])
        self.store.mtimes[dst] = self.store.clock()

    async def delete(self, name: str) -> None:
        """Delete an object."""
        check_name(name)
        if self._objects.pop(name, None) is None:
            raise NotFound(f"object {name!r} not found")

    async def size(self, name: str) -> int:
        """Object size."""
        check_name(name)
        try:
            return len(self._objects[name])
        except KeyError:
            raise NotFound(f"object {name!r} not found") from None

    async def list(self, prefix: str = "") -> list[str]:
        """Sorted names with the prefix."""
        return sorted(n for n in self._objects if n.startswith(prefix))

    async def flush(self) -> None:
        """Nothing to persist."""

    async def hash(self, name: str) -> str:
        """Store a content-addressed copy and return its name."""
        check_name(name)
        if name not in self._objects:
            raise NotFound(f"object {name!r} not found")
        data = bytes(self._objects[name])
        if is_zero(data):
            return ZERO_HASH
        content = block_hash(data)
        # Stored without trailing zeros, as Pithos does; reads zero-fill them back.
        self._objects.setdefault(content, bytearray(data.rstrip(b"\0")))
        self.store.mtimes[content] = self.store.clock()  # a dedup hit is a new reference: keep it young
        return content

    async def lock(self, name: str, owner: str, wait: bool = False, timeout: float | None = None) -> None:
        """Take an exclusive lock."""
        check_name(name)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            holder = self._locks.get(name)
            if holder is None or holder == owner:
                self._locks[name] = owner
                return
            if not wait or (deadline is not None and time.monotonic() >= deadline):
                raise Locked(f"{name!r} is locked by {holder}")
            await asyncio.sleep(0.01)

    async def unlock(self, name: str, owner: str, force: bool = False) -> None:
        """Release a lock."""
        check_name(name)
        holder = self._locks.get(name)
        if holder is None:
            return
        if holder != owner and not force:
            raise Locked(f"{name!r} is locked by {holder}")
        del self._locks[name]

    async def lock_info(self, name: str) -> LockInfo | None:
        """Describe the holder."""
        check_name(name)
        holder = self._locks.get(name)
        return None if holder is None else parse_owner(holder)

    async def fence_bump(self, key: str) -> int:
        """Grant a new writer generation of map ``key``: older writers become Fenced."""
        check_name(key)
        gen = self.store.fences.get(key, 0) + 1
        self.store.fences[key] = gen
        return gen

    async def fence_check(self, key: str, gen: int) -> None:
        """Fenced unless ``gen`` is the current generation of ``key``."""
        if self.store.fences.get(key, 0) != gen:
            raise Fenced(f"map {key}: this writer was fenced (its lock was taken over)")

    async def fence_drop(self, key: str) -> None:
        """Forget the fence of a removed map."""
        self.store.fences.pop(key, None)

    async def mtime(self, name: str) -> float:
        """When the object was last written (or touched)."""
        check_name(name)
        if name not in self._objects:
            raise NotFound(f"object {name!r} not found")
        return self.store.mtimes.get(name, 0.0)

    async def delete_if_old(self, name: str, cutoff: float) -> bool:
        """Delete unless written or touched at or after ``cutoff`` (one step: no touch
        can land between the age check and the delete)."""
        check_name(name)
        if name not in self._objects:
            raise NotFound(f"object {name!r} not found")
        if self.store.mtimes.get(name, 0.0) >= cutoff:
            return False
        del self._objects[name]
        return True

    async def touch(self, name: str) -> bool:
        """Make an existing object young again (False if absent)."""
        check_name(name)
        if name not in self._objects:
            return False
        self.store.mtimes[name] = self.store.clock()
        return True
