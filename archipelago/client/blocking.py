"""The blocking client: waits in C with the GIL released; thread-safe (a port per thread)."""

from __future__ import annotations

import os
import threading
from typing import Any

from archipelago.client.connect import (
    DEFAULT_TIMEOUT,
    EXTENT_WINDOW,
    instance_of,
    link_to,
    unpack,
)
from archipelago.errors import NotFound, PeerDied, StaleHandle
from archipelago.instance import Instance
from archipelago.peers.client import BlockingClient as _BlockingPeerClient
from archipelago.peers.ops import Flag, Op
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Reply
from archipelago.peers.retry import retry_blocking
from archipelago.wire import (
    DEFAULT_BLOCK_SIZE,
    MAPPER_PORT,
    Extent,
    VolumeInfo,
    block_placement,
    check_hex,
    ctrl_payload,
    decode_extents,
    decode_hashes,
    encode_hashes,
)


class Client:
    """Blocking client (thread-safe: each thread submits on its own port)."""

    def __init__(self, inst: Instance, link: PeerLink, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.instance = inst
        self.link = link
        self.peer = _BlockingPeerClient(link)
        self.timeout = timeout
        self.max_buffer = link.segment.max_buffer
        self._blockers: list[int] | None = None

    @classmethod
    def connect(cls, instance: Instance | str | os.PathLike[str] | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> Client:
        """Connect to the daemon of an instance (a data dir, or the default instance)."""
        inst = instance_of(instance)
        return cls(inst, link_to(inst), timeout)

    def call(self, op: Op, target: str = "", offset: int = 0, size: int = 0,
             payload: bytes | memoryview | None = None, flags: int = 0) -> Reply:
        """One raw request to the mapper peer (release the Reply)."""
        return self.peer.call(MAPPER_PORT, op, target, offset, size, payload, flags,
                              timeout=self.timeout)

    def ctrl(self, op: str, **kw: Any) -> Any:
        """One volume op; returns its decoded result."""
        return unpack(self.call(Op.CTRL, payload=ctrl_payload(op, **kw)))

    def ping(self) -> None:
        """Round-trip to the mapper peer."""
        self.peer.ping(MAPPER_PORT, timeout=self.timeout)

    def create(self, name: str, size: int, block_size: int = DEFAULT_BLOCK_SIZE) -> VolumeInfo:
        """Create an empty volume."""
        return VolumeInfo.from_dict(self.ctrl("create", name=name, size=size, block_size=block_size))

    def info(self, name: str) -> VolumeInfo:
        """Describe a volume (with its lock holder)."""
        return VolumeInfo.from_dict(self.ctrl("info", name=name))

    def list(self, internal: bool = False) -> list[VolumeInfo]:
        """Every volume and snapshot, by name (``internal``: NBD scratch clones too)."""
        return [VolumeInfo.from_dict(d) for d in self.ctrl("list", internal=internal)]

    def snapshot(self, volume: str, snap: str) -> VolumeInfo:
        """Read-only snapshot of a volume."""
        return VolumeInfo.from_dict(self.ctrl("snapshot", volume=volume, snap=snap))

    def clone(self, source: str, new: str, size: int | None = None) -> VolumeInfo:
        """Writable clone of a read-only map."""
        return VolumeInfo.from_dict(self.ctrl("clone", source=source, new=new, size=size))

    def clone_hashmap(self, new: str, hashes: list[str], nbytes: int, size: int | None = None,
                      readonly: bool = False) -> VolumeInfo:
        """Volume over content blocks (a Pithos hashmap) already stored."""
        return VolumeInfo.from_dict(self.ctrl("clone_hashmap", new=new, hashes=encode_hashes(hashes),
                               nbytes=nbytes, size=size, readonly=readonly))

    def hash(self, snap: str) -> VolumeInfo:
        """Content-addressed copy of a read-only map, named by its Merkle root."""
        return VolumeInfo.from_dict(self.ctrl("hash", snap=snap))

    def hashmap(self, name: str) -> tuple[list[str], int]:
        """(block hashes, bytes) of a content-addressed map."""
        d = self.ctrl("hashmap", name=name)
        return decode_hashes(d["hashes"]), int(d["bytes"])

    def usage(self, name: str) -> dict[str, Any]:
        """Block counts of a map (archipelago.mapper.usage): used, owned, shared, distinct."""
        return dict(self.ctrl("usage", name=name))

    def resize(self, name: str, size: int) -> VolumeInfo:
        """Grow or shrink."""
        return VolumeInfo.from_dict(self.ctrl("resize", name=name, size=size))

    def rename(self, old: str, new: str) -> VolumeInfo:
        """Rename a volume that is not open."""
        return VolumeInfo.from_dict(self.ctrl("rename", old=old, new=new))

    def remove(self, name: str) -> None:
        """Remove a volume or snapshot."""
        self.ctrl("remove", name=name)

    def lock(self, name: str) -> None:
        """Take the volume's lock for the daemon (held until unlock)."""
        self.ctrl("lock", name=name)

    def unlock(self, name: str, force: bool = False) -> None:
        """Release the volume's lock (force: whoever holds it)."""
        self.ctrl("unlock", name=name, force=force)

    def status(self) -> dict[str, Any]:
        """The mapper peer's status: open volumes, requests in flight, blocker ports."""
        return dict(self.ctrl("status"))

    def missing(self, names: list[str]) -> list[str]:
        """Those content names not stored yet."""
        return list(self.ctrl("missing", names=names))

    def put_block(self, name: str, data: bytes | memoryview) -> bool:
        """Store content block ``name`` (sha256 of data without trailing zeros) unless
        present; True if it was new. The caller vouches for the name."""
        r = self.call(Op.CREATE, name, 0, len(data), data)
        r.release()
        return bool(r.arg)

    def _blocker_port(self, name: str) -> int:
        if self._blockers is None:
            self._blockers = [int(b["port"]) for b in self.status()["blockers"]]
        return self._blockers[block_placement(name, len(self._blockers))]

    def _block_call(self, name: str, op: Op, offset: int = 0, size: int = 0,
                    payload: bytes | memoryview | None = None, arg: int = 0,
                    retry_for: float = 30.0) -> Reply:
        """One request to the blocker peer owning content block ``name`` (waits out a
        restart of that peer)."""
        check_hex(name)
        port = self._blocker_port(name)
        return retry_blocking(lambda: self.peer.call(port, op, name, offset, size, payload, arg=arg,
                                                 timeout=self.timeout), retry_for)

    def store_block(self, name: str, data: bytes | memoryview) -> bool:
        """Like :meth:`put_block`, but straight to the blocker peer that owns ``name`` (the
        mapper's placement); content blocks are immutable, so the client may place them
        itself, as librbd does. True if the block was new."""
        try:
            self._block_call(name, Op.INFO).release()
            return False
        except NotFound:
            pass
        self._block_call(name, Op.CREATE, 0, len(data), data, arg=len(data)).release()
        return True

    def read_block(self, name: str, offset: int = 0, size: int = DEFAULT_BLOCK_SIZE) -> bytes:
        """Read a content block (straight from its blocker peer; past its end reads zeros)."""
        return self._block_call(name, Op.READ, offset, size).bytes()

    def open(self, name: str, force: bool = False) -> VolumeHandle:
        """Open a volume (writable ones take the daemon's lock on it)."""
        d = self.ctrl("open", name=name, force=force)
        return VolumeHandle(self, int(d["handle"]), VolumeInfo.from_dict(d["info"]), force)

    def close(self) -> None:
        """Release this client's ports and the link."""
        self.peer.close()
        self.link.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VolumeHandle:
    """An open volume (blocking).

    When the mapper peer dies (PeerDied) or was restarted (the volume is no longer open
    there), the handle reopens the volume once the supervisor has restarted the mapper
    (within ``reopen_for`` seconds) and re-issues the request: every I/O op is
    idempotent, and the restarted mapper broke the dead one's stale lock.
    """

    def __init__(self, client: Client, handle: int, info: VolumeInfo, force: bool = False,
                 reopen_for: float = 30.0) -> None:
        self.client = client
        self.handle = handle
        self.info = info
        self.name = info.name
        self.closed = False
        self.force = force
        self.reopen_for = reopen_for
        self.reopened = 0
        self._reopening = threading.Lock()

    def _io(self, op: Op, offset: int = 0, size: int = 0,
            payload: bytes | memoryview | None = None, flags: int = 0) -> Reply:
        generation = self.reopened  # handle ids restart with the mapper: count reopens
        try:
            return self.client.call(op, self.name, offset, size, payload, flags)
        except (PeerDied, StaleHandle):
            if self.closed or self.reopen_for <= 0:
                raise
        with self._reopening:  # threads that failed together reopen once
            if self.reopened == generation:
                self._reopen()
        return self.client.call(op, self.name, offset, size, payload, flags)

    def _reopen(self) -> None:
        """Open the volume again on a restarted mapper peer."""
        d = retry_blocking(lambda: self.client.ctrl("open", name=self.name, force=self.force),
                       self.reopen_for)
        self.handle, self.info = int(d["handle"]), VolumeInfo.from_dict(d["info"])
        self.reopened += 1

    @property
    def size(self) -> int:
        """Size in bytes (as of open)."""
        return self.info.size

    def readinto(self, offset: int, buf: memoryview | bytearray) -> None:
        """Fill ``buf`` from ``offset`` (one copy from the segment)."""
        mv = memoryview(buf).cast("B")
        step = self.client.max_buffer
        for o in range(0, len(mv), step):
            n = min(step, len(mv) - o)
            with self._io(Op.READ, offset + o, n) as r:
                mv[o : o + n] = r.data

    def read_reply(self, offset: int, size: int) -> Reply:
        """Zero-copy read of at most ``max_buffer`` bytes: ``reply.data`` is a view of the
        segment buffer the data landed in; ``release()`` the Reply (or use ``with``)."""
        return self._io(Op.READ, offset, size)

    def read(self, offset: int, size: int) -> bytearray:
        """Read ``size`` bytes."""
        out = bytearray(size)
        self.readinto(offset, out)
        return out

    def write(self, offset: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        """Write (durable on return with ``fua``)."""
        mv = memoryview(data).cast("B")
        step, flags = self.client.max_buffer, Flag.FUA if fua else 0
        for o in range(0, len(mv), step):
            chunk = mv[o : o + step]
            self._io(Op.WRITE, offset + o, len(chunk), chunk, flags).release()

    def zero(self, offset: int, size: int, fua: bool = False) -> None:
        """Make a range read as zeros (whole blocks become map entries, no data I/O)."""
        self._io(Op.ZERO, offset, size, flags=Flag.FUA if fua else 0).release()

    def trim(self, offset: int, size: int, fua: bool = False) -> None:
        """Discard a range (reads back as zeros)."""
        self._io(Op.TRIM, offset, size, flags=Flag.FUA if fua else 0).release()

    def flush(self) -> None:
        """Make written data and map entries durable."""
        self._io(Op.FLUSH).release()

    def extents(self, offset: int = 0, size: int | None = None) -> list[Extent]:
        """Data/zero extents of a range (the whole volume by default)."""
        end = self.size if size is None else offset + size
        out: list[Extent] = []
        while offset < end:
            n = min(EXTENT_WINDOW, end - offset)
            out += decode_extents(self._io(Op.EXTENTS, offset, n).bytes())
            offset += n
        return out

    def close(self) -> None:
        """Flush and close (the last close releases the volume's lock)."""
        if not self.closed:
            self.closed = True
            try:
                self.client.ctrl("close", handle=self.handle)
            except NotFound:
                pass  # the mapper peer restarted since: nothing of ours is open there

    def __enter__(self) -> VolumeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
