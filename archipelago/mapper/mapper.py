"""Mapper: map-level operations (create, open, snapshot, clone, resize, rename, remove).

Map-level operations on one name are serialized in this process by an asyncio lock and
across hosts by the volume's blocker lock (taken for the operation unless this mapper
already holds it through an open volume or Mapper.lock). Content-addressed operations
(hash, hashmap, clone_hashmap) live in archipelago.mapper.content.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

from archipelago.blocker.base import Blocker
from archipelago.errors import (
    AlreadyExists,
    Busy,
    Corrupt,
    InvalidArgument,
    Locked,
    NotFound,
    ReadOnly,
)
from archipelago.mapper import content, removal
from archipelago.mapper.chunks import BATCH, copy_chunks, info_of
from archipelago.mapper.format import (
    DEFAULT_BLOCK_SIZE,
    F_READONLY,
    Header,
    check_block_size,
    check_size,
    check_user_name,
    check_volume_name,
    encode_header,
    header_name,
    lock_name,
    new_uid,
    next_epoch,
    tombstone,
)
from archipelago.mapper.header_io import load_header
from archipelago.mapper.volume import Volume
from archipelago.metrics import OPEN_VOLUMES
from archipelago.wire import VolumeInfo, is_reserved


class Mapper:
    """Volume maps stored in a blocker, for one lock owner (host:pid[:tag])."""

    def __init__(self, blocker: Blocker, owner: str) -> None:
        self.blocker = blocker
        self.owner = owner
        self._open: dict[str, Volume] = {}
        self._names: dict[str, asyncio.Lock] = {}
        self._held: set[str] = set()

    # -- headers -------------------------------------------------------------

    async def put_header(self, h: Header) -> None:
        """Durably (atomically) write a header."""
        await self.blocker.put(header_name(h.name), encode_header(h), fua=True)

    async def read_header(self, name: str) -> Header | None:
        """The header stored under ``name`` (tombstones included), None if absent."""
        h = await load_header(self.blocker, name)
        if h is None:
            return None
        if h.moving_to is not None:
            h = await self._settle_rename(h)
        return h

    async def _settle_rename(self, h: Header) -> Header:
        """Finish or roll back a rename interrupted by a crash."""
        assert h.moving_to is not None
        other = await self.read_header(h.moving_to)
        if other is not None and other.uid == h.uid:
            done = tombstone(h)
        else:
            done = replace(h, moving_to=None)
        await self.put_header(done)
        return done

    async def live(self, name: str) -> Header:
        """The header of an existing map (NotFound for absent or removed)."""
        check_volume_name(name)
        h = await self.read_header(name)
        if h is None or h.deleted:
            raise NotFound(f"volume {name!r} not found")
        return h

    async def free_name(self, name: str) -> Header | None:
        """The tombstone (or None) at a name about to be created; AlreadyExists if live."""
        h = await self.read_header(name)
        if h is not None and not h.deleted:
            raise AlreadyExists(f"volume {name!r} already exists")
        return h

    # -- serialization -------------------------------------------------------

    def _name_lock(self, name: str) -> asyncio.Lock:
        return self._names.setdefault(name, asyncio.Lock())

    def _owns_lock(self, name: str) -> bool:
        v = self._open.get(name)
        return name in self._held or (v is not None and v.writable and not v.closed)

    @asynccontextmanager
    async def guard(self, *names: str, only: tuple[str, ...] | None = None) -> AsyncIterator[None]:
        """Serialize map-level operations on these names (blocker-locking ``only`` if given)."""
        async with AsyncExitStack() as stack:
            for n in sorted(set(names)):
                await stack.enter_async_context(self._name_lock(n))
            for n in sorted(set(names if only is None else only)):
                if not self._owns_lock(n):
                    await self.blocker.lock(lock_name(n), self.owner)
                    stack.push_async_callback(self._release, n)
            yield

    async def _release(self, name: str) -> None:
        try:
            await self.blocker.unlock(lock_name(name), self.owner)
        except Locked:
            pass  # broken by force meanwhile: nothing of ours to release

    @asynccontextmanager
    async def _writable(self, name: str) -> AsyncIterator[Volume]:
        """The open Volume of ``name`` here, or a temporary one (caller holds guard)."""
        v = self._open.get(name)
        if v is not None and v.writable and not v.closed:
            yield v
            return
        h = await self.live(name)
        v = Volume(self, h, writable=not h.readonly)
        if v.writable:
            await v.grant()  # we hold the volume lock: fence out any evicted writer
        try:
            yield v
        finally:
            if v.gen is not None:
                await self.blocker.fence_forget(h.uid)

    # -- operations ----------------------------------------------------------

    async def create(self, name: str, size: int, block_size: int = DEFAULT_BLOCK_SIZE,
                     *, internal: bool = False) -> VolumeInfo:
        """Create an empty (all-zero) writable volume (``internal``: may use a reserved name)."""
        check_user_name(name, internal)
        check_size(size)
        check_block_size(block_size)
        async with self.guard(name):
            prev = await self.free_name(name)
            uid = new_uid()
            h = Header(
                name=name,
                size=size,
                block_size=block_size,
                epoch=next_epoch(prev),
                created=time.time(),
                uid=uid,
                prefixes=[f"{name}+{uid}"],
                own=0,
            )
            await self.put_header(h)
        return info_of(h)

    async def open(self, name: str, *, force: bool = False) -> Volume:
        """Open a map; writable ones take the exclusive lock (force breaks another's)."""
        check_volume_name(name)
        v = self._open.get(name)
        if v is not None and not v.closed:
            v.refs += 1
            return v
        async with self._name_lock(name):
            v = self._open.get(name)
            if v is not None and not v.closed:  # opened meanwhile by a concurrent open
                v.refs += 1
                return v
            h = await self.live(name)
            if not h.readonly:
                ln = lock_name(name)
                try:
                    await self.blocker.lock(ln, self.owner)
                except Locked:
                    if not force:
                        raise
                    await self.blocker.unlock(ln, self.owner, force=True)
                    await self.blocker.lock(ln, self.owner)
                try:
                    h = await self.live(name)  # it may have changed before we held the lock
                except Exception:
                    if name not in self._held:
                        await self._release(name)
                    raise
            v = Volume(self, h, writable=not h.readonly)
            if v.writable:
                try:
                    await v.grant()  # fences the writer whose lock we may just have broken
                except BaseException:
                    if name not in self._held:
                        await self._release(name)
                    raise
            self._open[name] = v
            OPEN_VOLUMES.inc()
        return v

    async def close_volume(self, v: Volume) -> None:
        """Drop one reference to an open volume; the last one flushes and unlocks."""
        if v.closed:
            return
        v.refs -= 1
        if v.refs > 0:
            return
        async with self._name_lock(v.name):
            async with v.drain.exclusive():
                if v.closed:
                    return
                v.closed = True
                if v.writable:
                    await self.blocker.flush()
            if self._open.get(v.name) is v:
                del self._open[v.name]
                OPEN_VOLUMES.dec()
            if v.gen is not None:
                await self.blocker.fence_forget(v.header.uid)
            if v.writable and v.name not in self._held:
                await self._release(v.name)

    async def info(self, name: str) -> VolumeInfo:
        """Describe a map, with its lock holder and whether that lock is stale."""
        h = await self.live(name)
        return info_of(h, await self.blocker.lock_info(lock_name(name)))

    async def list(self, internal: bool = False) -> list[VolumeInfo]:
        """Every live map (corrupt headers are skipped), sorted by name; the system's own
        volumes (reserved names: NBD scratch clones) only with ``internal``."""
        names = [n[4:] for n in await self.blocker.list("map:")]
        if not internal:
            names = [n for n in names if not is_reserved(n)]

        async def one(n: str) -> VolumeInfo | None:
            try:
                h = await self.read_header(n)
            except (Corrupt, InvalidArgument):
                return None
            return None if h is None or h.deleted else info_of(h)

        out: list[VolumeInfo | None] = []
        for i in range(0, len(names), BATCH):
            out += await asyncio.gather(*(one(n) for n in names[i : i + BATCH]))
        return sorted((x for x in out if x is not None), key=lambda x: x.name)

    async def snapshot(self, volume: str, snap: str, *, internal: bool = False) -> VolumeInfo:
        """Read-only copy sharing all blocks; the volume's epoch++ so writes copy up."""
        check_volume_name(volume)
        check_user_name(snap, internal)
        if volume == snap:
            raise AlreadyExists(f"volume {snap!r} already exists")
        async with self.guard(volume, snap):
            prev = await self.free_name(snap)
            async with self._writable(volume) as v:
                if not v.writable:
                    raise InvalidArgument(f"{volume!r} is read-only: clone it instead")
                async with v.drain.exclusive():
                    h = v.header
                    # Bump first: once the snapshot exists, no block it names is ours any more.
                    bumped = replace(h, epoch=h.epoch + 1)
                    await v.put_header(bumped)
                    v.header = bumped
                    uid = new_uid()
                    await copy_chunks(self.blocker, h, uid, cache=v)
                    s = Header(
                        name=snap,
                        size=h.size,
                        block_size=h.block_size,
                        epoch=next_epoch(prev),
                        flags=F_READONLY,
                        kind="snapshot",
                        parent=volume,
                        created=time.time(),
                        uid=uid,
                        prefixes=list(h.prefixes),
                        chunks=h.chunks,
                    )
                    await self.put_header(s)
        return info_of(s)

    async def clone(self, source: str, new: str, size: int | None = None, *,
                    internal: bool = False) -> VolumeInfo:
        """New writable volume sharing the blocks of a read-only map (size ≥ source)."""
        check_volume_name(source)
        check_user_name(new, internal)
        if size is not None:
            check_size(size)
        # The source is read-only, so only its in-process lock is taken: a removal
        # racing from another host makes the chunk copy fail with NotFound, cleaned up.
        async with self.guard(source, new, only=(new,)):
            src = await self.live(source)
            if not src.readonly:
                raise InvalidArgument(f"{source!r} is writable: snapshot it and clone that")
            if size is not None and size < src.size:
                raise InvalidArgument(f"clone size {size} is smaller than {source!r} ({src.size})")
            prev = await self.free_name(new)
            uid = new_uid()

            async def still_there() -> bool:
                h = await self.read_header(source)
                return h is not None and not h.deleted and h.uid == src.uid

            await copy_chunks(self.blocker, src, uid, still_there=still_there)
            h = Header(
                name=new,
                size=src.size if size is None else size,
                block_size=src.block_size,
                epoch=next_epoch(prev),
                kind="volume",
                parent=source,
                created=time.time(),
                uid=uid,
                prefixes=list(src.prefixes) + [f"{new}+{uid}"],
                own=len(src.prefixes),
                chunks=src.chunks,
            )
            await self.put_header(h)
        return info_of(h)

    async def clone_hashmap(
        self,
        new: str,
        hashes: list[str],
        nbytes: int,
        size: int | None = None,
        readonly: bool = False,
    ) -> VolumeInfo:
        """Map over a Pithos hashmap (4 MiB content blocks); readonly registers it as is."""
        return await content.clone_hashmap(self, new, hashes, nbytes, size, readonly)

    async def hash(self, snap: str) -> VolumeInfo:
        """Content-addressed read-only copy of a read-only map, named by its Merkle root."""
        return await content.hash_map(self, snap)

    async def hashmap(self, name: str) -> tuple[list[str], int]:
        """(block hashes, size in bytes) of a content-addressed map."""
        return await content.hashmap(self, name)

    async def resize(self, name: str, size: int) -> VolumeInfo:
        """Grow (zero tail) or shrink (drops entries, deletes only owned blocks)."""
        check_volume_name(name)
        check_size(size)
        async with self.guard(name):
            async with self._writable(name) as v:
                if not v.writable:
                    raise ReadOnly(f"volume {name!r} is read-only")
                async with v.drain.exclusive():
                    await v.resize_locked(size)
                return info_of(v.header)

    async def rename(self, old: str, new: str) -> VolumeInfo:
        """Rename a map that is not open (block names stay; the old name keeps a tombstone)."""
        return await removal.rename(self, old, new)

    async def remove(self, name: str, *, internal: bool = False) -> None:
        """Remove a map: tombstone header, delete only blocks it owns, then its chunks."""
        await removal.remove(self, name, internal=internal)

    async def lock(self, name: str) -> None:
        """Take the volume's lock for this owner (held until unlock or close)."""
        await self.live(name)
        await self.blocker.lock(lock_name(name), self.owner)
        self._held.add(name)

    async def unlock(self, name: str, force: bool = False) -> None:
        """Release the volume's lock (force: even if another owner holds it)."""
        check_volume_name(name)
        v = self._open.get(name)
        if v is not None and v.writable and not v.closed:
            raise Busy(f"volume {name!r} is open here: close it instead")
        held = await self.blocker.lock_info(lock_name(name)) if force else None
        await self.blocker.unlock(lock_name(name), self.owner, force=force)
        self._held.discard(name)
        if held is not None and held.owner != self.owner:
            await removal.fence_out(self.blocker, name)  # the evicted holder may be alive

    async def close(self) -> None:
        """Close every open volume (flush, release locks) and release held locks."""
        for v in list(self._open.values()):
            v.refs = 1
            await self.close_volume(v)
        for name in sorted(self._held):
            await self._release(name)
        self._held.clear()

