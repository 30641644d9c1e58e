"""The blocker contract: a tiny async object store every backend implements.

Objects are flat byte strings named by validated ASCII names. Reads past the
end of an object, or of an absent object, return zeros; ``read_existing`` is the
read for data a map references, where an absent object is an error (NotFound). Locks are advisory,
exclusive, and carry an owner string that says which host and process holds them.
"""

from __future__ import annotations

import os
import re
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass

from archipelago.errors import InvalidArgument

#: Longest object name accepted by every backend (RADOS allows more; files less).
MAX_NAME_LEN = 200
#: Largest single read or write accepted by the contract (requests are split above).
MAX_IO_SIZE = 64 * 1024 * 1024
#: Largest object offset accepted (16 TiB objects are far beyond any block).
MAX_OFFSET = 1 << 44

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@+=-]+$")


def check_name(name: str) -> str:
    """Validate an object name (no path separators, no traversal, bounded length)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument("object name must be a non-empty string")
    if len(name) > MAX_NAME_LEN:
        raise InvalidArgument(f"object name longer than {MAX_NAME_LEN} characters")
    if name in (".", "..") or name.startswith(".") or not _NAME_RE.match(name):
        raise InvalidArgument(f"invalid object name {name!r}")
    return name


def check_range(offset: int, size: int) -> None:
    """Validate an I/O range against the contract's limits."""
    if not isinstance(offset, int) or not isinstance(size, int):
        raise InvalidArgument("offset and size must be integers")
    if offset < 0 or size < 0:
        raise InvalidArgument(f"negative offset or size ({offset}, {size})")
    if size > MAX_IO_SIZE:
        raise InvalidArgument(f"I/O size {size} exceeds {MAX_IO_SIZE}")
    if offset + size > MAX_OFFSET:
        raise InvalidArgument(f"I/O range ends past {MAX_OFFSET}")


def make_owner(tag: str = "") -> str:
    """An owner string naming this host and process: ``host:pid[:tag]``."""
    owner = f"{socket.gethostname()}:{os.getpid()}"
    return f"{owner}:{tag}" if tag else owner


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock, and whether that holder is known to be gone."""

    owner: str
    host: str
    pid: int
    stale: bool


def parse_owner(owner: str) -> LockInfo:
    """Describe an owner string; a dead pid on this host makes the lock stale."""
    parts = owner.split(":")
    host = parts[0]
    try:
        pid = int(parts[1]) if len(parts) > 1 else -1
    except ValueError:
        pid = -1
    stale = False
    if host == socket.gethostname() and pid > 0:
        stale = not pid_alive(pid)
    return LockInfo(owner=owner, host=host, pid=pid, stale=stale)


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` runs on this host (a pid we may not signal is alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process whose parent died too stays a zombie until init reaps it (some
    # inits never do): it holds nothing, so its locks are stale.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class Blocker(ABC):
    """An async object store: the few primitives mapper and gateway build on."""

    #: Backend name used in config and entry points.
    kind: str = "abstract"

    @abstractmethod
    async def read(self, name: str, offset: int, size: int) -> bytes:
        """Read ``size`` bytes at ``offset``; holes, short and absent objects read as zeros."""

    async def read_existing(self, name: str, offset: int, size: int) -> bytes:
        """Like :meth:`read` (short objects zero-filled), but NotFound if the object is absent.

        Backends override this with one operation; this default checks, then reads.
        """
        if not await self.exists(name):
            from archipelago.errors import NotFound

            raise NotFound(f"object {name!r} not found")
        return await self.read(name, offset, size)

    @abstractmethod
    async def write(self, name: str, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        """Write ``data`` at ``offset``, creating the object; with fua, durable on return."""

    @abstractmethod
    async def put(self, name: str, data: bytes | memoryview, fua: bool = True) -> None:
        """Atomically replace the whole object: readers see the old or the new content."""

    @abstractmethod
    async def copy(self, src: str, dst: str, fua: bool = False) -> None:
        """Copy object ``src`` to ``dst`` (replacing it); NotFound if src is absent."""

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Delete an object; NotFound if it is absent."""

    @abstractmethod
    async def size(self, name: str) -> int:
        """Size in bytes of an object; NotFound if it is absent."""

    async def exists(self, name: str) -> bool:
        """True if the object exists."""
        from archipelago.errors import NotFound

        try:
            await self.size(name)
        except NotFound:
            return False
        return True

    async def mtime(self, name: str) -> float:
        """When the object was last written or touched (Unix time); NotFound if absent."""
        from archipelago.errors import NotSupported

        raise NotSupported(f"the {self.kind} blocker cannot tell an object's age")

    async def touch(self, name: str) -> bool:
        """True if the object exists, and then make it young again (garbage collection
        spares young objects: a block reused by deduplication must not be swept)."""
        return await self.exists(name)

    async def delete_if_old(self, name: str, cutoff: float) -> bool:
        """Delete the object unless it was written or touched at or after ``cutoff``;
        True if deleted, NotFound if absent. This default reads the age and deletes in
        two calls, so a touch landing in between is lost: backends close that window
        where they can (file: a lock on the object; memory: one step)."""
        if await self.mtime(name) >= cutoff:
            return False
        await self.delete(name)
        return True

    @abstractmethod
    async def list(self, prefix: str = "") -> list[str]:
        """Sorted names of objects starting with ``prefix`` (locks are not objects)."""

    @abstractmethod
    async def flush(self) -> None:
        """Make every completed write durable."""

    @abstractmethod
    async def hash(self, name: str) -> str:
        """Store a content-addressed copy of ``name`` and return its Pithos content name.

        All-zero objects are never stored: their name (ZERO_HASH) is returned as is.
        """

    @abstractmethod
    async def lock(self, name: str, owner: str, wait: bool = False, timeout: float | None = None) -> None:
        """Take the exclusive lock ``name`` for ``owner``; Locked if held by another.

        Taking a lock already held by the same owner succeeds. With ``wait`` it
        retries until it is free or ``timeout`` seconds have passed.
        """

    @abstractmethod
    async def unlock(self, name: str, owner: str, force: bool = False) -> None:
        """Release the lock; Locked if another owner holds it and not ``force``."""

    @abstractmethod
    async def lock_info(self, name: str) -> LockInfo | None:
        """Who holds lock ``name`` (None if free), with staleness."""

    # -- writer fencing (archipelago.blocker.fence; docs/fencing.md) -----------------

    async def fence_bump(self, key: str) -> int:
        """Grant a new writer generation of map ``key``: older writers become Fenced."""
        from archipelago.errors import NotSupported

        raise NotSupported(f"the {self.kind} blocker cannot fence writers")

    async def fence_check(self, key: str, gen: int) -> None:
        """Fenced unless ``gen`` is the current generation of ``key``."""
        from archipelago.errors import NotSupported

        raise NotSupported(f"the {self.kind} blocker cannot fence writers")

    async def fenced_op(self, key: str, gen: int, op: str, *args: object) -> None:
        """Run mutation ``op`` (write, put, copy, delete) only while ``gen`` is current.

        This default checks, then runs the op without yielding in between: atomic for
        in-process stores; shared stores override it (file: OFD lock, rados: fence object).
        """
        if op not in ("write", "put", "copy", "delete"):
            raise InvalidArgument(f"not a fenced operation: {op!r}")
        await self.fence_check(key, gen)
        await getattr(self, op)(*args)

    def fenced(self, key: str, gen: int | None) -> Blocker:
        """This blocker as seen by the writer of map ``key`` granted ``gen`` (None: unfenced)."""
        if gen is None:
            return self
        from archipelago.blocker.fence import FencedView

        return FencedView(self, key, gen)  # type: ignore[return-value]

    async def fence_drop(self, key: str) -> None:
        """Forget the fence of a removed map (no-op where fences cost nothing)."""

    async def fence_forget(self, key: str) -> None:
        """Release what this process caches for fence ``key`` (its volume was closed)."""

    async def close(self) -> None:
        """Release resources (files, connections)."""
