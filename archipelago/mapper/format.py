"""On-store map format: header objects, entry chunks and object naming.

Naming scheme (every internal name contains a character volume names cannot hold):

* header of volume ``N``:        ``map:N``
* entry chunk ``c`` of map uid ``U``: ``map@U@<c as 8 hex digits>``
* block owned by a volume:       ``<P>_<epoch hex16>_<index hex16>`` where the prefix
  ``P = <name at creation>+<uid>`` is fixed at creation, so renames keep block names
  and a name reused after remove or rename never meets the old blocks again
* content-addressed block:       the 64-hex Pithos content name
* volume lock:                   ``lock:N`` (blocker lock namespace)

Header object: ``b"AMAP"``, u16 format, u16 reserved, 16-byte xxh3-128 of the body,
then a msgpack body (name, size, block size, epoch, flags, kind, parent, created, uid,
prefix table, own prefix index, bitmap of stored chunks, pending rename target).
Chunk object: ``b"AMCK"``, u32 chunk index, ENTRIES_PER_CHUNK entries of 33 bytes (a
kind byte and a 32-byte id), then a trailer: xxh3-128 of (index, entries), ``b"KCMA"``. A chunk that is
not in the bitmap holds only zero entries and is not stored. Entries at or past the
block count are always zero, so growing a map needs no entry rewrite.
Entry ids: CONTENT = raw SHA-256 digest; OBJECT = u32 prefix index, u64 epoch,
u64 block index, u32 seq, u64 writer generation (big endian; seq and gen zero in maps
written before fencing). A nonzero (gen, seq) makes the name ``<P>_<epoch>_<index>.<gen
hex>.<seq hex>``: gen is unique per writable grant, seq per allocation in it, so a
writable block name is never reused (not even after its block was zeroed and deleted).
An OBJECT entry is owned (writable in place) iff its prefix is the map's own prefix
and its epoch is the map's epoch; a snapshot bumps the epoch, so every older block
becomes shared and is copied up.
"""

from __future__ import annotations

import re
import secrets
import struct
from dataclasses import dataclass, field

import msgpack
import xxhash

from archipelago.errors import Corrupt, InvalidArgument
from archipelago.wire import RESERVED_PREFIXES, is_reserved

MiB = 1024 * 1024
DEFAULT_BLOCK_SIZE = 4 * MiB
PITHOS_BLOCK_SIZE = 4 * MiB
MIN_BLOCK_SIZE = 64 * 1024
MAX_BLOCK_SIZE = 4 * MiB
MAX_SIZE = 1 << 48
MAX_NAME = 89
ENTRIES_PER_CHUNK = 4096
ENTRY_SIZE = 33
CHUNK_HDR = struct.Struct(">4sI")
CHUNK_TRAILER = struct.Struct(">16s4s")
CHUNK_MAGIC = b"AMCK"
CHUNK_END = b"KCMA"
CHUNK_BYTES = ENTRY_SIZE * ENTRIES_PER_CHUNK
CHUNK_SIZE = CHUNK_HDR.size + CHUNK_BYTES + CHUNK_TRAILER.size
HDR = struct.Struct(">4sHH16s")
HDR_MAGIC = b"AMAP"
FORMAT = 1

# Entry kinds (the first byte of an entry).
ZERO = 0
CONTENT = 1
OBJECT = 2
_OBJ_ID = struct.Struct(">IQQIQ")

# Map flags.
F_READONLY = 1
F_DELETED = 2

KINDS = ("volume", "snapshot", "hashed", "pithos")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,89}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
ZERO_ID = bytes(32)


def check_volume_name(name: str) -> str:
    """Validate a volume name: 1..89 of [A-Za-z0-9._-], not starting with '.'."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith("."):
        raise InvalidArgument(f"invalid volume name {name!r} (1-{MAX_NAME} of [A-Za-z0-9._-])")
    return name


def check_user_name(name: str, internal: bool = False) -> str:
    """A valid volume name a caller may create, rename or remove: reserved names only
    for the system's own volumes (``internal``)."""
    check_volume_name(name)
    if is_reserved(name) and not internal:
        prefix = next(p for p in RESERVED_PREFIXES if name.startswith(p))
        raise InvalidArgument(f"volume name {name!r} is reserved: names starting with "
                              f"{prefix!r} are the NBD server's scratch clones")
    return name


def check_block_size(block_size: int) -> int:
    """Validate a block size: a power of two from 64 KiB to 4 MiB."""
    if (
        not isinstance(block_size, int)
        or block_size < MIN_BLOCK_SIZE
        or block_size > MAX_BLOCK_SIZE
        or block_size & (block_size - 1)
    ):
        raise InvalidArgument(f"block size {block_size} is not a power of two in 64 KiB..4 MiB")
    return block_size


def check_size(size: int) -> int:
    """Validate a volume size in bytes."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or size > MAX_SIZE:
        raise InvalidArgument(f"invalid volume size {size!r} (0..{MAX_SIZE})")
    return size


def check_hex(h: str) -> str:
    """Validate a lowercase hex SHA-256 content name."""
    if not isinstance(h, str) or not _HEX64.match(h):
        raise InvalidArgument(f"invalid block hash {h!r}")
    return h


def header_name(name: str) -> str:
    """Object name of a volume's header."""
    return f"map:{name}"


def lock_name(name: str) -> str:
    """Blocker lock name of a volume."""
    return f"lock:{name}"


def chunk_name(uid: str, index: int) -> str:
    """Object name of one entry chunk of the map with this uid."""
    return f"map@{uid}@{index:08x}"


def new_uid() -> str:
    """A fresh map uid (64 random bits, hex)."""
    return secrets.token_hex(8)


def object_name(prefix: str, epoch: int, index: int, gen: int = 0, seq: int = 0) -> str:
    """Name of a block owned by a volume (prefix, epoch, block index, writer gen, seq)."""
    base = f"{prefix}_{epoch:016x}_{index:016x}"
    return f"{base}.{gen:x}.{seq:x}" if gen or seq else base


def object_id(prefix_index: int, epoch: int, index: int, gen: int = 0, seq: int = 0) -> bytes:
    """The 32-byte entry id of an owned-style block."""
    return _OBJ_ID.pack(prefix_index, epoch, index, seq, gen)


def parse_object_id(ident: bytes) -> tuple[int, int, int]:
    """(prefix index, epoch, block index) of an OBJECT entry id."""
    return _OBJ_ID.unpack(ident)[:3]


def object_name_of(prefixes: list[str], ident: bytes) -> str | None:
    """Object name of an OBJECT entry id (None: unknown prefix)."""
    p, epoch, index, seq, gen = _OBJ_ID.unpack(ident)
    return object_name(prefixes[p], epoch, index, gen, seq) if p < len(prefixes) else None


def blocks_of(size: int, block_size: int) -> int:
    """Number of blocks (entries) a volume of ``size`` bytes has."""
    return -(-size // block_size)


def chunks_of(nblocks: int) -> int:
    """Number of entry chunks needed for ``nblocks`` entries."""
    return -(-nblocks // ENTRIES_PER_CHUNK)


@dataclass
class Header:
    """Decoded map header."""

    name: str
    size: int
    block_size: int
    epoch: int
    flags: int = 0
    kind: str = "volume"
    parent: str | None = None
    created: float = 0.0
    uid: str = ""
    prefixes: list[str] = field(default_factory=list)
    own: int = -1
    chunks: bytes = b""
    moving_to: str | None = None

    @property
    def readonly(self) -> bool:
        """True for snapshots and content-addressed maps."""
        return bool(self.flags & F_READONLY)

    @property
    def deleted(self) -> bool:
        """True for a tombstone."""
        return bool(self.flags & F_DELETED)

    @property
    def nblocks(self) -> int:
        """Number of entries."""
        return blocks_of(self.size, self.block_size)

    def has_chunk(self, c: int) -> bool:
        """True if chunk ``c`` is stored."""
        return c // 8 < len(self.chunks) and bool(self.chunks[c // 8] & (1 << (c % 8)))

    def stored_chunks(self) -> list[int]:
        """Indexes of stored chunks."""
        return [c for c in range(len(self.chunks) * 8) if self.has_chunk(c)]

    def with_chunk(self, c: int, present: bool = True) -> bytes:
        """The chunk bitmap with chunk ``c`` set or cleared."""
        bm = bytearray(self.chunks)
        if len(bm) <= c // 8:
            bm.extend(bytes(c // 8 + 1 - len(bm)))
        if present:
            bm[c // 8] |= 1 << (c % 8)
        else:
            bm[c // 8] &= ~(1 << (c % 8)) & 0xFF
        return bytes(bm.rstrip(b"\0"))

    def name_of(self, kind: int, ident: bytes) -> str:
        """Object name an entry refers to."""
        if kind == CONTENT:
            return ident.hex()
        if kind == OBJECT:
            name = object_name_of(self.prefixes, ident)
            if name is None:
                raise Corrupt(f"map {self.name!r}: entry names unknown prefix "
                              f"{parse_object_id(ident)[0]}")
            return name
        raise Corrupt(f"map {self.name!r}: entry of kind {kind} has no object")

    def owns(self, kind: int, ident: bytes) -> bool:
        """True if the entry is a block this map owns (may be written in place)."""
        if kind != OBJECT or self.own < 0 or self.readonly:
            return False
        p, epoch, _ = parse_object_id(ident)
        return p == self.own and epoch == self.epoch


def tombstone(h: Header) -> Header:
    """The header a removed (or renamed-away) map leaves behind: keeps its epoch."""
    return Header(
        name=h.name,
        size=0,
        block_size=h.block_size,
        epoch=h.epoch,
        flags=F_DELETED,
        kind=h.kind,
        created=h.created,
        uid=h.uid,
    )


def next_epoch(prev: Header | None) -> int:
    """Epoch of a map created under a name (one past any tombstone there)."""
    return prev.epoch + 1 if prev is not None else 1


def encode_header(h: Header) -> bytes:
    """Serialize a header object."""
    body = msgpack.packb(
        {
            "name": h.name,
            "size": h.size,
            "bs": h.block_size,
            "epoch": h.epoch,
            "flags": h.flags,
            "kind": h.kind,
            "parent": h.parent,
            "created": h.created,
            "uid": h.uid,
            "prefixes": h.prefixes,
            "own": h.own,
            "chunks": h.chunks,
            "moving": h.moving_to,
        },
        use_bin_type=True,
    )
    return HDR.pack(HDR_MAGIC, FORMAT, 0, xxhash.xxh3_128_digest(body)) + body


def decode_header(name: str, data: bytes) -> Header:
    """Parse and verify a header object (Corrupt on any damage)."""
    if len(data) < HDR.size:
        raise Corrupt(f"map {name!r}: header truncated ({len(data)} bytes)")
    magic, fmt, _, digest = HDR.unpack_from(data)
    if magic != HDR_MAGIC:
        raise Corrupt(f"map {name!r}: bad magic {magic!r}")
    if fmt != FORMAT:
        raise Corrupt(f"map {name!r}: unsupported map format {fmt}")
    body = bytes(data[HDR.size :])
    if xxhash.xxh3_128_digest(body) != digest:
        raise Corrupt(f"map {name!r}: header checksum mismatch")
    try:
        d = msgpack.unpackb(body, raw=False)
        h = Header(
            name=d["name"],
            size=d["size"],
            block_size=d["bs"],
            epoch=d["epoch"],
            flags=d["flags"],
            kind=d["kind"],
            parent=d["parent"],
            created=float(d["created"]),
            uid=d["uid"],
            prefixes=list(d["prefixes"]),
            own=d["own"],
            chunks=bytes(d["chunks"]),
            moving_to=d["moving"],
        )
    except (ValueError, KeyError, TypeError, msgpack.ExtraData) as exc:
        raise Corrupt(f"map {name!r}: undecodable header ({exc})") from None
    if h.name != name or h.kind not in KINDS or not isinstance(h.size, int):
        raise Corrupt(f"map {name!r}: inconsistent header")
    if not h.deleted:
        try:
            check_size(h.size)
            check_block_size(h.block_size)
        except InvalidArgument as exc:
            raise Corrupt(f"map {name!r}: {exc}") from None
    return h


def encode_chunk(index: int, entries: bytes | bytearray) -> bytes:
    """Serialize one entry chunk (checksum in a trailer, so truncation always shows)."""
    idx = struct.pack(">I", index)
    digest = xxhash.xxh3_128_digest(idx + bytes(entries))
    return CHUNK_HDR.pack(CHUNK_MAGIC, index) + bytes(entries) + CHUNK_TRAILER.pack(digest, CHUNK_END)


def decode_chunk(map_name: str, index: int, data: bytes) -> bytearray:
    """Parse and verify one entry chunk; returns its raw entries."""
    if len(data) != CHUNK_SIZE:
        raise Corrupt(f"map {map_name!r}: chunk {index} truncated ({len(data)} bytes)")
    magic, idx = CHUNK_HDR.unpack_from(data)
    digest, end = CHUNK_TRAILER.unpack_from(data, CHUNK_SIZE - CHUNK_TRAILER.size)
    if magic == bytes(4):
        raise Corrupt(f"map {map_name!r}: chunk {index} is missing")
    if magic != CHUNK_MAGIC or idx != index:
        raise Corrupt(f"map {map_name!r}: chunk {index} has a bad magic or index")
    if end != CHUNK_END:
        raise Corrupt(f"map {map_name!r}: chunk {index} is truncated")
    entries = data[CHUNK_HDR.size : CHUNK_HDR.size + CHUNK_BYTES]
    if xxhash.xxh3_128_digest(struct.pack(">I", index) + entries) != digest:
        raise Corrupt(f"map {map_name!r}: chunk {index} checksum mismatch")
    if max(entries[0::ENTRY_SIZE]) > OBJECT:
        raise Corrupt(f"map {map_name!r}: chunk {index} has an unknown entry kind")
    return bytearray(entries)
