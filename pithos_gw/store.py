"""The gateway's block layer: content-addressed 4 MiB blocks on any Blocker.

Blocks are stored under their Pithos content name (sha256 of the block with
trailing zeros stripped), stripped of those zeros, and never when all-zero.
Hashing runs in a worker thread: hashlib releases the GIL on large buffers, so
the event loop keeps serving while a block is hashed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from archipelago.blocker.base import Blocker
from archipelago.errors import InvalidArgument, MissingBlock, NotFound
from archipelago.hashing import BLOCK_SIZE, ZERO_HASH

#: Blocks up to this size are hashed on the loop: a thread hop costs more than hashing them.
_INLINE_HASH = 64 * 1024
#: Blocks of one upload hashed and written at once while the next is read.
_INGEST_DEPTH = 3
#: How many existence checks run at once when looking for missing blocks.
_EXISTS_BATCH = 64


@dataclass(frozen=True)
class Ingested:
    """What a streamed upload produced: the block map, its size and the MD5."""

    hashes: list[str]
    size: int
    md5: str


def _digest(data: bytes, md5: hashlib._Hash | None) -> tuple[str, bytes]:
    """Hash one block (thread side): content name and the bytes to store."""
    if md5 is not None:
        md5.update(data)
    stripped = data.rstrip(b"\0")
    return hashlib.sha256(stripped).hexdigest(), stripped


def check_hash(h: object) -> str:
    """Validate a hex block id (64 lowercase hex digits)."""
    if not isinstance(h, str) or len(h) != 64:
        raise InvalidArgument("block hashes must be 64 hex digits")
    try:
        bytes.fromhex(h)
    except ValueError:
        raise InvalidArgument("block hashes must be 64 hex digits") from None
    return h.lower()


def nblocks(size: int, block_size: int = BLOCK_SIZE) -> int:
    """Number of map entries of an object of ``size`` bytes (0 bytes -> 1 entry)."""
    return max(1, -(-size // block_size))


class BlockStore:
    """Content-addressed blocks over a Blocker (the same store volumes use)."""

    def __init__(self, blocker: Blocker, block_size: int = BLOCK_SIZE, prefetch: int = 1) -> None:
        self.blocker = blocker
        self.block_size = block_size
        #: Pieces read ahead of the one being sent (2 measured no faster, direct or via peers).
        self.prefetch = prefetch

    async def has(self, h: str) -> bool:
        """True when block ``h`` is stored (the zero block always is)."""
        return h == ZERO_HASH or await self.blocker.exists(h)

    async def missing(self, hashes: list[str]) -> list[str]:
        """The distinct ids among ``hashes`` that are not stored, in map order."""
        todo = [h for h in dict.fromkeys(hashes) if h != ZERO_HASH]
        bulk = getattr(self.blocker, "missing", None)
        if bulk is not None:  # the daemon's peers answer a whole batch at once
            return list(await bulk(todo))
        out: list[str] = []
        for i in range(0, len(todo), _EXISTS_BATCH):
            batch = todo[i : i + _EXISTS_BATCH]
            found = await asyncio.gather(*(self.blocker.touch(h) for h in batch))
            out.extend(h for h, ok in zip(batch, found, strict=True) if not ok)
        return out

    async def _store(self, data: bytes, md5: hashlib._Hash | None) -> str:
        if len(data) <= _INLINE_HASH:
            h, stripped = _digest(data, md5)
        else:
            h, stripped = await asyncio.to_thread(_digest, data, md5)
        # touch, not exists: a block reused by dedup must look young to the GC (gc.py)
        if h != ZERO_HASH and not await self.blocker.touch(h):
            # Not durable yet: barrier() makes every new block durable at once before
            # a map that references it is recorded (one sync instead of one per block).
            await self.blocker.put(h, stripped, fua=False)
        return h

    async def barrier(self) -> None:
        """Make every block stored so far durable (call before recording a map)."""
        await self.blocker.flush()

    async def put_block(self, data: bytes) -> str:
        """Store one block (at most block_size bytes) and return its id."""
        if len(data) > self.block_size:
            raise InvalidArgument(f"block larger than {self.block_size} bytes")
        return await self._store(bytes(data), None)

    async def ingest(self, chunks: AsyncIterator[bytes], limit: int | None = None) -> Ingested:
        """Cut a byte stream into blocks, storing each as it fills; MD5 in the same pass.

        Up to ``_INGEST_DEPTH`` blocks are hashed and written while the next one is read
        from the stream. Blocks are written before any caller records a map, so a failed
        or cancelled stream leaves only unreferenced blocks behind.
        """
        md5 = hashlib.md5()
        hashes: list[str] = []
        pieces: list[memoryview] = []
        have = size = 0
        # MD5 must see blocks in order: each block's update is chained after the
        # previous one's, in a worker thread, beside the SHA-256s and writes of the
        # blocks (other threads; hashlib releases the GIL): the upload costs about
        # max(md5, sha256 + write) per block, and the loop keeps reading meanwhile.
        window: deque[tuple[asyncio.Future[str], asyncio.Future[None]]] = deque()
        last_md5: asyncio.Future[None] | None = None

        async def chained(prev: asyncio.Future[None] | None, block: bytes) -> None:
            if prev is not None:
                await prev
            await asyncio.to_thread(md5.update, block)

        async def flush(block: bytes) -> None:
            nonlocal last_md5
            while len(window) >= _INGEST_DEPTH:
                sha, md = window.popleft()
                hashes.append(await sha)
                await md
            if len(block) <= _INLINE_HASH and last_md5 is None:
                md5.update(block)
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                done.set_result(None)
                job = done
            else:
                job = last_md5 = asyncio.ensure_future(chained(last_md5, block))
            window.append((asyncio.ensure_future(self._store(block, None)), job))

        bs = self.block_size
        try:
            async for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise InvalidArgument(f"body longer than {limit} bytes")
                # Pieces are joined once per block: each byte is copied once on the loop.
                # (a mutable buffer could change under the view before the join)
                view = memoryview(chunk if isinstance(chunk, bytes) else bytes(chunk))
                while view:
                    take = min(len(view), bs - have)
                    pieces.append(view[:take])
                    have += take
                    view = view[take:]
                    if have == bs:
                        block = b"".join(pieces)
                        pieces.clear()
                        have = 0
                        await flush(block)
            if pieces or size == 0:
                await flush(b"".join(pieces))
            while window:
                sha, md = window.popleft()
                hashes.append(await sha)
                await md
        finally:
            jobs = [j for pair in window for j in pair]
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        return Ingested(hashes=hashes, size=size, md5=md5.hexdigest())

    async def read_block(self, h: str, offset: int, length: int) -> bytes:
        """``length`` bytes of block ``h`` from ``offset`` (zero block synthesised);
        MissingBlock if the store lost it (never zeros in its place)."""
        if h == ZERO_HASH:
            return bytes(length)
        try:
            return await self.blocker.read_existing(h, offset, length)
        except NotFound:
            raise MissingBlock(f"block {h} is missing from the store") from None

    async def read_range(
        self, hashes: list[str], size: int, start: int, end: int
    ) -> AsyncIterator[bytes]:
        """Yield the bytes [start, end) of an object, one block piece at a time.

        The next ``prefetch`` pieces are fetched while the current one is being sent.
        """
        end = min(end, size)
        bs = self.block_size
        window: deque[asyncio.Future[bytes]] = deque()
        nxt = start

        def launch() -> None:
            nonlocal nxt
            idx, off = divmod(nxt, bs)
            length = min(bs - off, end - nxt)  # reads are exact: short blocks read as zeros
            window.append(asyncio.ensure_future(self.read_block(hashes[idx], off, length)))
            nxt += length

        try:
            while nxt < end and len(window) <= self.prefetch:
                launch()
            while window:
                data = await window.popleft()
                if nxt < end:
                    launch()
                yield data
        finally:
            for fut in window:
                fut.cancel()
            await asyncio.gather(*window, return_exceptions=True)

    async def md5_of(self, hashes: list[str], size: int) -> str:
        """MD5 of an object assembled from its blocks (one read pass, hashing in a thread)."""
        md5 = hashlib.md5()
        async for data in self.read_range(hashes, size, 0, size):
            await asyncio.to_thread(md5.update, data)
        return md5.hexdigest()

    async def rewrite(
        self,
        hashes: list[str],
        size: int,
        offset: int,
        chunks: AsyncIterator[bytes],
        expected: int | None,
    ) -> tuple[list[str], int]:
        """Overwrite an object from ``offset`` with a stream (read-modify-write of blocks).

        Returns the new map and size. Only the blocks the stream touches change.
        """
        bs = self.block_size
        if offset > size:
            raise InvalidArgument("update offset beyond the object size")
        new = list(hashes) if size else []
        pos = offset
        block = bytearray()
        base = -1  # index of the block being assembled in ``block``

        async def load(idx: int) -> bytearray:
            if idx < len(new) and idx * bs < size:
                have = min(bs, size - idx * bs)
                return bytearray(await self.read_block(new[idx], 0, have))
            return bytearray()

        async def commit() -> None:
            h = await self._store(bytes(block), None)
            if base < len(new):
                new[base] = h
            else:
                new.extend([ZERO_HASH] * (base - len(new)))
                new.append(h)

        written = 0
        async for chunk in chunks:
            mv = memoryview(chunk)
            while mv:
                idx, off = divmod(pos, bs)
                if idx != base:
                    if base >= 0:
                        await commit()
                    base, block = idx, await load(idx)
                take = min(len(mv), bs - off)
                if len(block) < off:
                    block.extend(bytes(off - len(block)))
                block[off : off + take] = mv[:take]
                mv = mv[take:]
                pos += take
                written += take
                if expected is not None and written > expected:
                    raise InvalidArgument("body longer than the Content-Range")
        if expected is not None and written != expected:
            raise InvalidArgument("body shorter than the Content-Range")
        if base >= 0:
            await commit()
        new_size = max(size, pos)
        return (new or [ZERO_HASH]), new_size

    async def truncate(self, hashes: list[str], size: int, new_size: int) -> list[str]:
        """The map of the object cut (or zero-extended) to ``new_size`` bytes."""
        bs = self.block_size
        if new_size < 0:
            raise InvalidArgument("negative object size")
        count = nblocks(new_size, bs)
        if new_size >= size:
            # Trailing zeros do not change a block's id, so growing only adds zero entries.
            out = list(hashes) if size else []
            return (out + [ZERO_HASH] * (count - len(out))) or [ZERO_HASH]
        out = list(hashes[:count])
        tail = new_size - (count - 1) * bs
        if new_size == 0:
            return [ZERO_HASH]
        if tail < bs:
            data = await self.read_block(out[-1], 0, tail)
            out[-1] = await self._store(data, None)
        return out


async def body_chunks(read: Callable[[], Awaitable[bytes]]) -> AsyncIterator[bytes]:
    """Adapt a ``readany``-style coroutine (b"" at EOF) to an async iterator."""
    while True:
        data = await read()
        if not data:
            return
        yield data
