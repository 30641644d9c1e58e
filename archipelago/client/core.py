"""The client written once, without I/O: what each call asks the daemon and how its answer decodes.

Every client method is a *plan*: a generator that yields what it needs done and is sent
the outcome -- a :class:`Call` (one request; sent its Reply, or thrown its error), an
:class:`Each` (sub-plans the shell runs concurrently or in turn; sent their results),
or a :class:`Reopen` (the handle's volume must be opened again, once for all pieces
that failed together). aio.py and blocking.py are the two shells that run plans.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from archipelago.client.connect import EXTENT_WINDOW, unpack
from archipelago.errors import NotFound, PeerDied, StaleHandle
from archipelago.instance import Instance
from archipelago.peers.ops import Flag, Op
from archipelago.peers.registry import PeerLink
from archipelago.peers.request import Reply
from archipelago.wire import (
    DEFAULT_BLOCK_SIZE,
    Extent,
    VolumeInfo,
    block_placement,
    check_hex,
    ctrl_payload,
    decode_extents,
    decode_hashes,
    encode_hashes,
)

T = TypeVar("T")
Buffer = bytes | bytearray | memoryview


class Call(NamedTuple):  # a tuple: built once per request, so it must be cheap to make
    """One request: to the mapper peer (``port`` None) or to a blocker peer's port;
    re-issued while the peer restarts (PeerDied) for ``retry_for`` seconds."""

    op: Op
    target: str = ""
    offset: int = 0
    size: int = 0
    payload: Buffer | None = None
    flags: int = 0
    arg: int = 0
    port: int | None = None
    retry_for: float = 0.0


@dataclass(frozen=True)
class Each:
    """Sub-plans to run (concurrently where the shell can); their results, in order."""

    plans: list[Generator[Any, Any, Any]]


@dataclass(frozen=True)
class Reopen:
    """Open the handle's volume again unless another piece did since ``generation``."""

    generation: int


Plan = Generator[Call | Each | Reopen, Any, T]


def plan_ctrl(op: str, **kw: Any) -> Plan[Any]:
    """One volume op over CTRL; its decoded result."""
    return unpack((yield Call(Op.CTRL, payload=ctrl_payload(op, **kw))))


def released(reply: Reply) -> Reply:
    """``reply`` after releasing its segment buffer (its fields stay readable)."""
    reply.release()
    return reply


class ClientCore:
    """State and plans of a client of one daemon (the shells add how requests travel)."""

    def __init__(self, inst: Instance, link: PeerLink, timeout: float) -> None:
        self.instance = inst
        self.link = link
        self.timeout = timeout
        self.max_buffer = link.segment.max_buffer
        self._blockers: list[int] | None = None

    def plan_create(self, name: str, size: int, block_size: int = DEFAULT_BLOCK_SIZE
                    ) -> Plan[VolumeInfo]:
        """Create an empty volume."""
        return VolumeInfo.from_dict((yield from plan_ctrl("create", name=name, size=size,
                                                          block_size=block_size)))

    def plan_info(self, name: str) -> Plan[VolumeInfo]:
        """Describe a volume (with its lock holder)."""
        return VolumeInfo.from_dict((yield from plan_ctrl("info", name=name)))

    def plan_list(self, internal: bool = False) -> Plan[list[VolumeInfo]]:
        """Every volume and snapshot, by name (``internal``: NBD scratch clones too)."""
        return [VolumeInfo.from_dict(d) for d in (yield from plan_ctrl("list", internal=internal))]

    def plan_snapshot(self, volume: str, snap: str) -> Plan[VolumeInfo]:
        """Read-only snapshot of a volume."""
        return VolumeInfo.from_dict((yield from plan_ctrl("snapshot", volume=volume, snap=snap)))

    def plan_clone(self, source: str, new: str, size: int | None = None) -> Plan[VolumeInfo]:
        """Writable clone of a read-only map."""
        return VolumeInfo.from_dict((yield from plan_ctrl("clone", source=source, new=new,
                                                          size=size)))

    def plan_clone_hashmap(self, new: str, hashes: list[str], nbytes: int, size: int | None = None,
                           readonly: bool = False) -> Plan[VolumeInfo]:
        """Volume over content blocks (a Pithos hashmap) already stored."""
        return VolumeInfo.from_dict((yield from plan_ctrl(
            "clone_hashmap", new=new, hashes=encode_hashes(hashes), nbytes=nbytes, size=size,
            readonly=readonly)))

    def plan_hash(self, snap: str) -> Plan[VolumeInfo]:
        """Content-addressed copy of a read-only map, named by its Merkle root."""
        return VolumeInfo.from_dict((yield from plan_ctrl("hash", snap=snap)))

    def plan_hashmap(self, name: str) -> Plan[tuple[list[str], int]]:
        """(block hashes, bytes) of a content-addressed map."""
        d = yield from plan_ctrl("hashmap", name=name)
        return decode_hashes(d["hashes"]), int(d["bytes"])

    def plan_usage(self, name: str) -> Plan[dict[str, Any]]:
        """Block counts of a map (archipelago.mapper.usage): used, owned, shared, distinct."""
        return dict((yield from plan_ctrl("usage", name=name)))

    def plan_resize(self, name: str, size: int) -> Plan[VolumeInfo]:
        """Grow or shrink."""
        return VolumeInfo.from_dict((yield from plan_ctrl("resize", name=name, size=size)))

    def plan_rename(self, old: str, new: str) -> Plan[VolumeInfo]:
        """Rename a volume that is not open."""
        return VolumeInfo.from_dict((yield from plan_ctrl("rename", old=old, new=new)))

    def plan_remove(self, name: str) -> Plan[None]:
        """Remove a volume or snapshot."""
        yield from plan_ctrl("remove", name=name)

    def plan_lock(self, name: str) -> Plan[None]:
        """Take the volume's lock for the daemon (held until unlock)."""
        yield from plan_ctrl("lock", name=name)

    def plan_unlock(self, name: str, force: bool = False) -> Plan[None]:
        """Release the volume's lock (force: whoever holds it)."""
        yield from plan_ctrl("unlock", name=name, force=force)

    def plan_status(self) -> Plan[dict[str, Any]]:
        """The mapper peer's status: open volumes, requests in flight, blocker ports."""
        return dict((yield from plan_ctrl("status")))

    def plan_missing(self, names: list[str]) -> Plan[list[str]]:
        """Those content names not stored yet."""
        return list((yield from plan_ctrl("missing", names=names)))

    def plan_put_block(self, name: str, data: Buffer) -> Plan[bool]:
        """Store content block ``name`` (sha256 of data without trailing zeros) unless
        present; True if it was new. The caller vouches for the name."""
        return bool(released((yield Call(Op.CREATE, name, 0, len(data), data))).arg)

    def _block_call(self, name: str, op: Op, offset: int = 0, size: int = 0,
                    payload: Buffer | None = None, arg: int = 0,
                    retry_for: float = 30.0) -> Plan[Reply]:
        """One request to the blocker peer owning content block ``name`` (the mapper's
        placement; waits out a restart of that peer)."""
        check_hex(name)
        if self._blockers is None:
            st = yield from self.plan_status()
            self._blockers = [int(b["port"]) for b in st["blockers"]]
        port = self._blockers[block_placement(name, len(self._blockers))]
        return (yield Call(op, name, offset, size, payload, arg=arg, port=port,
                           retry_for=retry_for))

    def plan_store_block(self, name: str, data: Buffer) -> Plan[bool]:
        """Like put_block, but straight to the blocker peer that owns ``name``; content
        blocks are immutable, so the client may place them itself, as librbd does. True
        if the block was new."""
        try:
            released((yield from self._block_call(name, Op.INFO)))
            return False
        except NotFound:
            pass
        released((yield from self._block_call(name, Op.CREATE, 0, len(data), data, arg=len(data))))
        return True

    def plan_read_block(self, name: str, offset: int = 0, size: int = DEFAULT_BLOCK_SIZE
                        ) -> Plan[bytes]:
        """Read a content block (straight from its blocker peer; past its end reads zeros)."""
        return (yield from self._block_call(name, Op.READ, offset, size)).bytes()

    def plan_open(self, name: str, force: bool = False) -> Plan[dict[str, Any]]:
        """Open a volume (writable ones take the daemon's lock on it): handle id and info."""
        return (yield from plan_ctrl("open", name=name, force=force))


class HandleCore:
    """State and plans of an open volume. When the mapper peer dies (PeerDied) or was
    restarted (StaleHandle: the volume is not open there), the handle reopens the volume
    once the supervisor restarted the mapper (within ``reopen_for`` seconds) and re-issues
    the request: every I/O op is idempotent, and the new mapper broke the dead one's lock."""

    def __init__(self, client: Any, handle: int, info: VolumeInfo, force: bool = False,
                 reopen_for: float = 30.0) -> None:
        self.client = client
        self.handle = handle
        self.info = info
        self.name = info.name
        self.closed = False
        self.force = force
        self.reopen_for = reopen_for
        self.reopened = 0

    @property
    def size(self) -> int:
        """Size in bytes (as of open)."""
        return self.info.size

    def _io(self, op: Op, offset: int = 0, size: int = 0, payload: Buffer | None = None,
            flags: int = 0) -> Plan[Reply]:
        call = Call(op, self.name, offset, size, payload, flags)
        generation = self.reopened  # handle ids restart with the mapper: count reopens
        try:
            return (yield call)
        except (PeerDied, StaleHandle):
            if self.closed or self.reopen_for <= 0:
                raise
        yield Reopen(generation)
        return (yield call)

    def plan_reopen(self) -> Plan[None]:
        """Open the volume again on a restarted mapper peer."""
        r = yield Call(Op.CTRL, payload=ctrl_payload("open", name=self.name, force=self.force),
                       retry_for=self.reopen_for)
        d = unpack(r)
        self.handle, self.info = int(d["handle"]), VolumeInfo.from_dict(d["info"])
        self.reopened += 1

    def _pieces(self, n: int, piece: Callable[[int, int], Plan[None]]) -> Plan[None]:
        step = self.client.max_buffer
        if n <= step:  # the common case: one request, no sub-plan to schedule
            yield from piece(0, n)
        else:
            yield Each([piece(o, min(step, n - o)) for o in range(0, n, step)])

    def plan_readinto(self, offset: int, buf: Buffer) -> Plan[None]:
        """Fill ``buf`` from ``offset`` (one copy from the segment)."""
        mv = memoryview(buf).cast("B")

        def piece(o: int, n: int) -> Plan[None]:
            with (yield from self._io(Op.READ, offset + o, n)) as r:
                mv[o : o + n] = r.data

        yield from self._pieces(len(mv), piece)

    def plan_read_reply(self, offset: int, size: int) -> Plan[Reply]:
        """Zero-copy read of at most ``max_buffer`` bytes: ``reply.data`` is a view of the
        segment buffer the data landed in; ``release()`` the Reply (or use ``with``)."""
        return (yield from self._io(Op.READ, offset, size))

    def plan_read(self, offset: int, size: int) -> Plan[bytearray]:
        """Read ``size`` bytes."""
        out = bytearray(size)
        yield from self.plan_readinto(offset, out)
        return out

    def plan_write(self, offset: int, data: Buffer, fua: bool = False) -> Plan[None]:
        """Write (durable on return with ``fua``)."""
        mv, flags = memoryview(data).cast("B"), Flag.FUA if fua else 0

        def piece(o: int, n: int) -> Plan[None]:
            released((yield from self._io(Op.WRITE, offset + o, n, mv[o : o + n], flags)))

        yield from self._pieces(len(mv), piece)

    def plan_zero(self, offset: int, size: int, fua: bool = False) -> Plan[None]:
        """Make a range read as zeros (whole blocks become map entries, no data I/O)."""
        released((yield from self._io(Op.ZERO, offset, size, flags=Flag.FUA if fua else 0)))

    def plan_trim(self, offset: int, size: int, fua: bool = False) -> Plan[None]:
        """Discard a range (reads back as zeros)."""
        released((yield from self._io(Op.TRIM, offset, size, flags=Flag.FUA if fua else 0)))

    def plan_flush(self) -> Plan[None]:
        """Make written data and map entries durable."""
        released((yield from self._io(Op.FLUSH)))

    def plan_extents(self, offset: int = 0, size: int | None = None) -> Plan[list[Extent]]:
        """Data/zero extents of a range (the whole volume by default)."""
        end = self.size if size is None else offset + size
        out: list[Extent] = []
        while offset < end:
            n = min(EXTENT_WINDOW, end - offset)
            out += decode_extents((yield from self._io(Op.EXTENTS, offset, n)).bytes())
            offset += n
        return out

    def plan_close(self) -> Plan[None]:
        """Flush and close (the last close releases the volume's lock)."""
        if not self.closed:
            self.closed = True
            try:
                yield from plan_ctrl("close", handle=self.handle)
            except NotFound:
                pass  # the mapper peer restarted since: nothing of ours is open there


#: The plans both shells expose as methods (``plan_X`` -> ``X``).
CLIENT_METHODS = ("create", "info", "list", "snapshot", "clone", "clone_hashmap", "hash", "hashmap",
                  "usage", "resize", "rename", "remove", "lock", "unlock", "status", "missing",
                  "put_block", "store_block", "read_block")
HANDLE_METHODS = ("readinto", "read_reply", "read", "write", "zero", "trim", "flush", "extents",
                  "close")


def bind(cls: type, names: tuple[str, ...], shell: Callable[[Callable[..., Plan[Any]]], Any]) -> None:
    """Give ``cls`` a method ``X`` per name: ``shell(cls.plan_X)``, with its name and docstring."""
    for name in names:
        plan = getattr(cls, f"plan_{name}")
        method = shell(plan)
        method.__name__, method.__doc__ = name, plan.__doc__
        method.__qualname__ = f"{cls.__name__}.{name}"
        setattr(cls, name, method)
